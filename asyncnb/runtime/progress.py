"""`report_progress`: called inside predict, it updates the running workloads' status.

`Running`, in a contextvar, is what the current thread runs: progress reports, `emit()` and
the capture of stdout/stderr/logging (runtime/capture.py) all find their workloads by it.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..contract.tasks import ProgressEvent, StorageDescription

_MIN_INTERVAL_S = 0.1


@dataclass
class Running:
    """The workloads the current thread runs, and how to tell the gateway about them."""

    api: str
    ids: Sequence[str]
    emit: Callable[[ProgressEvent], None]
    storage: StorageDescription | None = None
    sink: object | None = None  # a streaming.WorkloadRun: where outputs and log lines go
    last_sent: float = field(default=0.0)
    lock: threading.Lock = field(default_factory=threading.Lock)


_current: contextvars.ContextVar[Running | None] = contextvars.ContextVar(
    "asyncnb_running", default=None
)


def report_progress(fraction: float, message: str | None = None) -> None:
    """Report that the current workload (or batch) is `fraction` (0..1) done.

    Call it from inside `predict`/`predict_batch`; the workload's status then shows
    `{"progress": {"fraction", "message"}}`. Outside a workload it does nothing, so
    the same predictor runs unchanged in a plain notebook cell.
    """
    running = _current.get()
    if running is None:
        return
    fraction = min(1.0, max(0.0, float(fraction)))
    now = time.monotonic()
    with running.lock:
        # Throttled so a tight loop cannot flood the scheduler; the last 100% always goes out.
        if fraction < 1.0 and now - running.last_sent < _MIN_INTERVAL_S:
            return
        running.last_sent = now
    running.emit(
        {
            "kind": "progress",
            "api": running.api,
            "ids": list(running.ids),
            "fraction": fraction,
            "message": None if message is None else str(message)[:500],
        }
    )


def set_running(
    api: str,
    ids: Sequence[str],
    emit: Callable[[ProgressEvent], None],
    storage: StorageDescription | None = None,
    sink: object | None = None,
) -> contextvars.Token[Running | None]:
    return _current.set(Running(api=api, ids=ids, emit=emit, storage=storage, sink=sink))


def current_running() -> Running | None:
    return _current.get()


def clear_running(token: contextvars.Token[Running | None]) -> None:
    _current.reset(token)
