"""A worker process that a hung predict was left running in is replaced.

Python cannot stop a thread. When `call_with_timeout` gives up on a predict, the process is
*tainted*: the thread goes on holding CPU, memory and maybe a GPU. With a Nanny, the worker
stops taking new tasks at once (status `closing_gracefully`, as a retiring worker), its other
chunks run on to their end (or time out too), and the outcomes of the last of them carry
`recycle: True` and the worker's address. The gateway, once it holds those outcomes, forgets
the chunk's task and asks the scheduler to restart that worker through its Nanny; tasks that
were still waiting on it are scheduled again elsewhere, as a lost worker's are.

The gateway, not the worker, restarts it: only the gateway knows when the outcomes have reached
it, and a worker that killed itself earlier would lose them (Dask would even run the chunk,
hung predict included, again to recompute its lost result).

Without a Nanny (a worker started with `dask worker --no-nanny`, or the threads of an
in-process cluster) nothing can restart the process: a warning is logged once and the thread
is left running, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..contract.tasks import Outcome

logger = logging.getLogger(__name__)

# Should the gateway never ask for the restart (it is down, or its request failed), the worker
# asks its Nanny itself this long after its last chunk's outcomes went out.
FALLBACK_AFTER_S = 60.0


class ProcessHealth:
    """How many asyncnb chunks run in this process, and whether a hung predict tainted it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.tainted = False
        self.recycle_requested = False
        self._warned = False

    def enter(self) -> None:
        with self._lock:
            self.active += 1

    def leave(self) -> bool:
        """This chunk has ended: True when it is the last one of a tainted process that a
        Nanny can restart (its outcomes then ask the gateway for the restart, once)."""
        with self._lock:
            self.active = max(0, self.active - 1)
            if not self.tainted or self.active or self.recycle_requested:
                return False
            self.recycle_requested = True
            return True

    def taint(self, worker: Any) -> None:
        """A predict thread was abandoned in this process."""
        with self._lock:
            first = not self.tainted
            self.tainted = True
            if worker is not None and not getattr(worker, "nanny", None):
                # nothing could restart it: leave the thread, and never ask for a restart
                self.recycle_requested = True
                warn, self._warned = not self._warned, True
            else:
                warn = False
        if warn:
            logger.warning(
                "a predict ran past its timeout_s and cannot be stopped: this worker has no "
                "Nanny to restart it, so its thread is left running"
            )
        if first and worker is not None and getattr(worker, "nanny", None):
            logger.warning(
                "a predict ran past its timeout_s: worker %s takes no new tasks, and is "
                "restarted once its other tasks end",
                getattr(worker, "address", "?"),
            )
            _stop_taking_tasks(worker)


def _stop_taking_tasks(worker: Any) -> None:
    """As a retiring worker: no new task starts here, the scheduler sends none; the memory
    monitor (which resumes a *paused* worker) leaves this status alone."""
    try:
        from distributed.core import Status
    except ImportError:  # pragma: no cover - distributed is always there with a worker
        return

    def stop() -> None:
        if worker.status == Status.running or worker.status == Status.paused:
            worker.status = Status.closing_gracefully

    try:
        worker.loop.add_callback(stop)
    except Exception:
        logger.exception("could not stop worker %s taking tasks", worker)


def mark_recycle(outcomes: list[Outcome], worker: Any) -> None:
    """Ask the gateway, through these outcomes, to restart `worker` once it holds them."""
    address = getattr(worker, "address", None)
    if not address or not getattr(worker, "nanny", None):
        return  # not a Dask worker, or one nothing can restart
    for outcome in outcomes:
        outcome["recycle"] = True
        outcome["worker"] = str(address)
    threading.Thread(
        target=_restart_later, args=(worker,), name="asyncnb-recycle", daemon=True
    ).start()


def _restart_later(worker: Any) -> None:
    time.sleep(FALLBACK_AFTER_S)

    async def kill() -> None:
        logger.warning("no restart came from the gateway: asking this worker's Nanny for one")
        try:
            await worker.rpc(worker.nanny).kill(reason="asyncnb-hung-predict")
        except Exception as exc:  # this process is going away: the comm may end with it
            logger.info("the Nanny's kill ended with %r", exc)

    worker.loop.add_callback(kill)


health = ProcessHealth()
