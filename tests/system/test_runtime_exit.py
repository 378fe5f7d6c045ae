"""A process whose predict hung past its timeout still exits (a real interpreter's shutdown)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_HUNG_PREDICT = textwrap.dedent(
    """
    import atexit
    import time
    from asyncnb.runtime.chunks import Timeout, call_with_timeout

    started = time.monotonic()
    # atexit handlers run after the interpreter has joined its non-daemon threads
    atexit.register(lambda: print(f"exit after {time.monotonic() - started:.2f}"))
    try:
        call_with_timeout(lambda: time.sleep(1.5), 0.05)
    except Timeout:
        print("timed out")
    """
)


def test_hung_predict_does_not_block_process_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HUNG_PREDICT], capture_output=True, text=True, timeout=30
    )
    lines = done.stdout.split()
    assert lines[:2] == ["timed", "out"], done.stderr
    assert float(lines[-1]) < 1.0, done.stdout
