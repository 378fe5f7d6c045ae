"""An in-process backend, for testing the engine and dispatch without Dask or processes.

A test decides what the cluster does: which workers exist, when a chunk's task starts,
reports progress, ends (with outcomes by event or as its result), fails, or is dropped by
the cluster; or it hands the backend a `runner` (`runtime.chunks.run_chunk`, say) and every
chunk then runs for real on a thread of this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ...contract.tasks import ChunkItem, ChunkSpec, Outcome, WarmResult
from .base import (
    BackendUnavailable,
    EventHandler,
    OutcomesHandler,
    TaskCancelled,
    TaskFailed,
    TaskHandle,
    WorkerInfo,
    WorkerSnapshot,
)

ChunkRunner = Callable[[ChunkSpec, list[ChunkItem]], "list[Outcome] | None"]
Warmer = Callable[[ChunkSpec], WarmResult]


class FakeTask:
    """One submitted task; the test ends it with `finish`, `fail` or `drop`."""

    def __init__(
        self,
        backend: FakeBackend,
        key: str,
        spec: ChunkSpec,
        items: list[ChunkItem],
        resources: dict[str, float],
        worker: str | None,
    ) -> None:
        self.backend = backend
        self.key = key
        self.spec = spec
        self.items = items
        self.resources = resources
        self.worker = worker
        self.cancelled = False  # by the gateway (`Backend.cancel`)
        self._ended = asyncio.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    @property
    def ids(self) -> list[str]:
        return [item["id"] for item in self.items]

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # what the cluster does ----------------------------------------------------------------
    def start(self, t: float | None = None) -> None:
        """A worker started running it (the `start` event)."""
        self.backend.emit(
            {
                "kind": "start",
                "api": self.spec["api"],
                "ids": self.ids,
                "key": self.key,
                "t": t or time.time(),
            }
        )

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.backend.emit(
            {
                "kind": "progress",
                "api": self.spec["api"],
                "ids": self.ids,
                "fraction": fraction,
                "message": message,
            }
        )

    def stream(self, items: list[dict[str, Any]]) -> None:
        """Outputs and log lines, as a worker batches them (`seq` is added per workload, and
        `id` defaults to the task's only workload)."""
        seqs = self.__dict__.setdefault("_seqs", {})
        sent = []
        for item in items:
            item = {"type": "output", "t": time.time(), **item}
            item.setdefault("id", self.ids[0])
            item.setdefault("attempt", 1)
            item.setdefault("seq", seqs.get(item["id"], -1) + 1)
            seqs[item["id"]] = item["seq"]
            sent.append(item)
        self.backend.emit(
            {"kind": "stream", "api": self.spec["api"], "key": self.key, "items": sent}
        )

    def finish(self, result: Any = None) -> None:
        """End with `result` (a list of outcomes, or None after `publish`)."""
        self._result = result
        self._ended.set()

    def publish(self, outcomes: list[Outcome]) -> None:
        """End the way a worker ends a chunk of small outcomes: an event, then no result."""
        self.backend.publish(self.key, outcomes)
        self.finish(None)

    def succeed(self, value: bytes = b"null", content_type: str = "application/json") -> None:
        """Every item ends with `value`, by event."""
        now = time.time()
        self.publish(
            [
                {
                    "id": item_id,
                    "ok": True,
                    "content_type": content_type,
                    "size": len(value),
                    "data": value,
                    "started_at": now,
                    "finished_at": now,
                }
                for item_id in self.ids
            ]
        )

    def fail(self, exc: BaseException, *, workers_lost: bool = False) -> None:
        """The task as a whole raised (or kept killing its workers: `workers_lost`)."""
        self._error = TaskFailed(exc, workers_lost=workers_lost)
        self._ended.set()

    def drop(self) -> None:
        """The cluster dropped it (a lost connection to the scheduler)."""
        self._error = TaskCancelled(f"the cluster dropped {self.key}")
        self._ended.set()

    # what the engine sees -----------------------------------------------------------------
    async def wait(self) -> None:
        await self._ended.wait()
        if self._error is not None:
            raise self._error

    async def result(self) -> Any:
        await self.wait()
        self.backend.fetched.append(self.key)
        return self._result


class FakeBackend:
    """Workers by address, each offering resources (`{"w1": {"GPU": 1}}`), or `n` plain ones."""

    def __init__(
        self,
        workers: dict[str, dict[str, float]] | int = 1,
        *,
        runner: ChunkRunner | None = None,
        warmer: Warmer | None = None,
    ) -> None:
        self.worker_info: dict[str, WorkerInfo] = {}
        self.set_workers(workers)
        self.runner = runner
        self.warmer = warmer or (lambda spec: {"ok": True})
        self.reachable = True
        self.chunks: list[FakeTask] = []
        self.warmups: list[FakeTask] = []
        self.cancelled: list[str] = []
        self.released: list[str] = []
        self.fetched: list[str] = []  # keys whose results were fetched (not sent by event)
        self.recycled: list[tuple[str, str]] = []  # (task key, worker) restarted
        self.closed = False
        self._handlers: tuple[EventHandler, OutcomesHandler] | None = None
        self._scheduler_changed = False
        self._threads: set[asyncio.Future[None]] = set()

    # test controls ------------------------------------------------------------------------
    def set_workers(self, workers: dict[str, dict[str, float]] | int) -> None:
        if isinstance(workers, int):
            workers = {f"tcp://worker-{n}": {} for n in range(workers)}
        self.worker_info = {
            address: WorkerInfo(name=address.rsplit("/", 1)[-1], resources=dict(resources))
            for address, resources in workers.items()
        }

    def replace_scheduler(self) -> None:
        """A new scheduler: the tasks handed to the old one stay pending for good."""
        self._scheduler_changed = True

    def pending(self) -> list[FakeTask]:
        return [task for task in self.chunks if not task.ended and not task.cancelled]

    def emit(self, event: Any) -> None:
        if self._handlers is not None:
            self._handlers[0](event)

    def publish(self, key: str, outcomes: list[Outcome]) -> None:
        if self._handlers is not None:
            self._handlers[1]({"key": key, "outcomes": outcomes})

    # the Backend --------------------------------------------------------------------------
    def subscribe(self, on_event: EventHandler, on_outcomes: OutcomesHandler) -> None:
        self._handlers = (on_event, on_outcomes)

    async def workers(self) -> WorkerSnapshot:
        if not self.reachable:
            raise BackendUnavailable("the fake scheduler is unreachable")
        changed, self._scheduler_changed = self._scheduler_changed, False
        return WorkerSnapshot(dict(self.worker_info), scheduler_changed=changed)

    def submit_chunk(
        self,
        key: str,
        spec: ChunkSpec,
        items: list[ChunkItem],
        *,
        resources: dict[str, float],
        worker: str | None,
    ) -> FakeTask:
        task = FakeTask(self, key, spec, items, resources, worker)
        self.chunks.append(task)
        if self.runner is not None:
            self._run(task, self.runner)
        return task

    def _run(self, task: FakeTask, runner: ChunkRunner) -> None:
        async def run() -> None:
            try:
                result = await asyncio.to_thread(runner, task.spec, task.items)
            except Exception as exc:
                task.fail(exc)
            else:
                task.finish(result)

        future = asyncio.ensure_future(run())
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)

    def submit_warm(self, key: str, spec: ChunkSpec, *, resources: dict[str, float]) -> FakeTask:
        task = FakeTask(self, key, spec, [], resources, None)
        self.warmups.append(task)
        task.finish(self.warmer(spec))
        return task

    async def cancel(self, task: TaskHandle) -> None:
        assert isinstance(task, FakeTask)
        task.cancelled = True
        self.cancelled.append(task.key)
        if not task.ended:
            task.drop()

    def release(self, task: TaskHandle) -> None:
        self.released.append(task.key)

    async def recycle_worker(self, task: TaskHandle, worker: str) -> None:
        self.recycled.append((task.key, worker))

    async def close(self) -> None:
        self.closed = True
        for future in list(self._threads):
            await asyncio.gather(future, return_exceptions=True)
