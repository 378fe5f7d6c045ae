"""The seam between the engine and a cluster: all that dispatch needs of one, and no more.

`DaskBackend` (dask.py) is the real one and the only module of the engine that imports
distributed; `FakeBackend` (fake.py) runs in-process, under the control of a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ...contract.tasks import ChunkItem, ChunkSpec, OutcomesEvent, WorkerEvent


@dataclass(frozen=True)
class WorkerInfo:
    name: Any  # what the cluster calls it (a cluster retires workers by name)
    resources: dict[str, float]


@dataclass(frozen=True)
class WorkerSnapshot:
    """The workers the scheduler knows now, by address."""

    workers: dict[str, WorkerInfo]
    # A new scheduler, or a new connection to one, since the last snapshot: it knows none of
    # the tasks handed to the old one, which may never end now.
    scheduler_changed: bool = False


class BackendUnavailable(Exception):
    """The scheduler cannot be reached now."""


class TaskCancelled(Exception):
    """The cluster dropped the task without running it to the end (not our own cancel): the
    usual cause is a lost connection to the scheduler."""


class TaskFailed(Exception):
    """The task raised, or the cluster gave up on it."""

    def __init__(self, cause: BaseException, *, workers_lost: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        # It was run again on other workers after each one died, until the cluster gave up.
        self.workers_lost = workers_lost


class TaskHandle(Protocol):
    key: str

    async def wait(self) -> None:
        """Until the task has ended, without fetching its result.

        Raises TaskCancelled or TaskFailed when it did not end with a result."""

    async def result(self) -> Any:
        """Its return value, fetched from where it is held; raises as `wait` does."""


EventHandler = Callable[[WorkerEvent], None]
OutcomesHandler = Callable[[OutcomesEvent], None]


class Backend(Protocol):
    def subscribe(self, on_event: EventHandler, on_outcomes: OutcomesHandler) -> None:
        """Call these with the events workers publish (and again after a reconnect)."""

    async def workers(self) -> WorkerSnapshot:
        """The workers now; raises BackendUnavailable when the scheduler cannot be reached."""

    def submit_chunk(
        self,
        key: str,
        spec: ChunkSpec,
        items: list[ChunkItem],
        *,
        resources: dict[str, float],
        worker: str | None,
    ) -> TaskHandle:
        """Run `runtime.run_chunk(spec, items)`, on `worker` if it can (else elsewhere)."""

    def submit_warm(self, key: str, spec: ChunkSpec, *, resources: dict[str, float]) -> TaskHandle:
        """Run `runtime.warm(spec)` on some worker that offers `resources`."""

    async def cancel(self, task: TaskHandle) -> None:
        """Stop a task whose work nobody wants any more."""

    def release(self, task: TaskHandle) -> None:
        """Forget a task that has ended; the cluster may drop what it holds of it."""

    async def recycle_worker(self, task: TaskHandle, worker: str) -> None:
        """Restart the worker process that ran `task` (ended, its outcomes applied), which a
        hung predict was left in: forget the task first, so that it is not run again."""

    async def close(self) -> None: ...
