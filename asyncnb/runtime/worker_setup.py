"""Set up a worker process of a cluster the gateway starts itself (a Dask preload).

Ctrl-C in a terminal (and Jupyter's interrupt) signals a whole process group. The gateway stops
its workers itself, in order, when it stops; a worker that took the SIGINT as well would die
mid-task with a KeyboardInterrupt traceback, so workers ignore it.
"""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
