"""Where the engine's chunks run: the seam (`base`), Dask (`dask`) and an in-process fake."""

from .base import (
    Backend,
    BackendUnavailable,
    TaskCancelled,
    TaskFailed,
    TaskHandle,
    WorkerInfo,
    WorkerSnapshot,
)

__all__ = [
    "Backend",
    "BackendUnavailable",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "WorkerInfo",
    "WorkerSnapshot",
]
