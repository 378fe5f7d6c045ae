"""Dispatch: hands the cluster only what the workers can start now, as chunks of queued workloads.

Dask's per-task cost decides throughput (see docs/architecture.md), so a backlog travels as
chunks of up to `max_chunk` workloads, one task each, and every free slot gets its own chunk
so that a lone workload never waits for company. What a chunk's end means for its workloads
(results, retries, requeues) is `outcomes.py`; this module decides what runs where.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Mapping

from ..contract.events import StreamItem, StreamMessage
from ..contract.status import APIPhase, Status
from ..contract.tasks import (
    ChunkItem,
    ChunkSpec,
    OutcomesEvent,
    StorageDescription,
    WorkerEvent,
    error_record,
)
from .aio import within
from .api_state import APIState
from .backends.base import Backend, BackendUnavailable, TaskCancelled, TaskHandle
from .background import BackgroundTasks
from .events import EventHub
from .metrics import GatewayMetrics
from .outcomes import Chunk, FinishMany, OutcomeHandler
from .workers import WorkerPool
from .workload import WorkloadState

logger = logging.getLogger(__name__)
_REFRESH_S = 0.5


class Dispatcher:
    def __init__(
        self,
        backend: Backend,
        apis: Mapping[str, APIState],
        *,
        finish: FinishMany,
        storage: StorageDescription,
        metrics: GatewayMetrics,
        tasks: BackgroundTasks,
        max_chunk: int = 64,
        prefetch: int = 1,
        inline_result_bytes: int = 1024 * 1024,
        workers: WorkerPool | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.backend = backend
        self.events = events
        self.apis = apis
        self.workers = workers or WorkerPool()
        self.max_chunk = max_chunk
        self.prefetch = prefetch
        self._storage = storage
        self._inline_result_bytes = inline_result_bytes
        self._metrics = metrics
        self._tasks = tasks
        self._wake = asyncio.Event()
        self._warmups: set[asyncio.Task[None]] = set()
        self._chunks: dict[str, Chunk] = {}  # by task key
        self.outcomes = OutcomeHandler(apis, finish, self.requeue)
        self._last_refresh = 0.0
        self._closing = False

    async def start(self) -> None:
        self.backend.subscribe(self._on_event, self._on_outcomes)
        await self.refresh_workers()
        self._tasks.spawn(self._run())

    async def close(self) -> None:
        self._closing = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def spec(self, state: APIState) -> ChunkSpec:
        """What a worker needs to know of the API to run its chunks."""
        return {
            "api": state.name,
            "version": state.version,
            "storage": self._storage,
            "inline_limit": self._inline_result_bytes,
            "max_batch_size": state.options.max_batch_size,
            "max_concurrency": state.options.max_concurrency,
            "timeout_s": state.options.timeout_s,
            "outcomes_by_event": True,
        }

    # workers -----------------------------------------------------------------------------
    async def refresh_workers(self) -> None:
        try:
            snapshot = await self.backend.workers()
        except BackendUnavailable as exc:
            logger.warning("%s", exc)
            self.workers.clear()
        else:
            if snapshot.scheduler_changed:
                self._scheduler_replaced()
            self.workers.update(snapshot.workers)
            self._last_refresh = time.monotonic()
        for state in self.apis.values():
            self.count_workers(state)

    def _scheduler_replaced(self) -> None:
        """A new scheduler knows neither our warm-ups nor our chunks."""
        logger.warning("the Dask scheduler was replaced: requeueing its chunks, re-warming APIs")
        # Chunks handed to the old scheduler are lost, even those whose tasks still look
        # pending (and may stay so for good): stop waiting for them and requeue their work.
        for chunk in list(self._chunks.values()):
            chunk.lost = True
            if chunk.collector is not None:
                chunk.collector.cancel()
        for task in list(self._warmups):
            task.cancel()
        for state in self.apis.values():
            if state.state is not APIPhase.ERROR:
                self.warm(state)

    def count_workers(self, state: APIState) -> None:
        state.workers = self.workers.count(state.options.dask_resources())

    # deploy warm-up ----------------------------------------------------------------------
    def warm(self, state: APIState) -> None:
        self.count_workers(state)
        task = self._tasks.spawn(self._warm(state, state.version))
        self._warmups.add(task)
        task.add_done_callback(self._warmups.discard)

    async def _warm(self, state: APIState, version: int) -> None:
        self.workers.warming += 1
        try:
            await self._warm_once(state, version)
        finally:
            self.workers.warming -= 1

    async def _warm_once(self, state: APIState, version: int) -> None:
        task = self.backend.submit_warm(
            f"asyncnb-warm-{state.name}-v{version}-{uuid.uuid4().hex[:8]}",
            self.spec(state),
            resources=state.options.dask_resources(),
        )
        try:
            outcome = await task.result()
        except TaskCancelled:
            return  # the scheduler went away; warming starts again once it is back
        except Exception as exc:
            outcome = {"ok": False, "error": error_record(getattr(exc, "cause", exc))}
        if self.apis.get(state.name) is not state or state.version != version:
            return
        if outcome["ok"]:
            state.state, state.error = APIPhase.READY, None
        else:
            state.state, state.error = APIPhase.ERROR, outcome["error"]
            logger.warning("API %s v%d failed to start: %s", state.name, version, outcome["error"])
        state.updated_at = time.time()
        self.wake()

    # the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            try:
                await within(self._wake.wait(), _REFRESH_S)
            except TimeoutError:
                pass
            self._wake.clear()
            if time.monotonic() - self._last_refresh >= _REFRESH_S:
                await self.refresh_workers()
            for state in list(self.apis.values()):
                try:
                    self.dispatch(state)
                except Exception:
                    logger.exception("dispatch of %s failed", state.name)

    def dispatch(self, state: APIState) -> int:
        """Hand the workers what they can start now; how many chunks were submitted."""
        if state.state is not APIPhase.READY or not len(state.queue):
            return 0
        options = state.options
        slots = state.workers * options.max_concurrency
        batch = options.max_batch_size
        limit = max(self.max_chunk, batch)
        # Under a backlog, one chunk more per slot waits on the worker (behind its concurrency
        # gate), so a slot starts its next chunk without a round trip through the gateway.
        # Only a backlog that gives every slot a full chunk is prefetched: splitting a shorter
        # one into more, smaller chunks costs more Dask round trips than it saves (measured in
        # docs/benchmarks.md), and a higher priority arriving next must still go first.
        backlog = len(state.queue) >= slots * limit
        in_flight_limit = slots * (1 + (self.prefetch if backlog else 0))
        free = in_flight_limit - state.chunks_in_flight
        if free <= 0:
            return 0
        if batch > 1 and options.batch_wait_ms and len(state.queue) < batch:
            oldest = state.queue.oldest_created_at()
            wait_left = (oldest or 0) + options.batch_wait_ms / 1000 - time.time()
            if wait_left > 0:
                asyncio.get_running_loop().call_later(wait_left, self.wake)
                return 0
        submitted = 0
        while free > 0 and len(state.queue):
            # Share the backlog among all slots, busy ones included: they free up soon, and a
            # slot that frees first must not take the whole backlog while others go idle.
            size = math.ceil(len(state.queue) / in_flight_limit)
            if batch > 1:
                size = math.ceil(size / batch) * batch
            workloads = state.queue.pop(min(size, limit))
            if not workloads or not self._submit(state, workloads):
                break  # a refused submit is tried again at the next wake
            free -= 1
            submitted += 1
        return submitted

    def _submit(self, state: APIState, workloads: list[WorkloadState]) -> bool:
        key = f"asyncnb-{state.name}-{uuid.uuid4().hex}"
        worker = self.workers.least_loaded(state.options.dask_resources())
        items: list[ChunkItem] = [
            {
                "id": w.id,
                "content_type": w.content_type,
                "body": w.body,
                "attempt": w.attempts + 1,
            }
            for w in workloads
        ]
        try:
            task = self.backend.submit_chunk(
                key,
                self.spec(state),
                items,
                resources=state.options.dask_resources(),
                worker=worker,
            )
        except Exception:
            logger.exception("could not hand a chunk of %s to Dask; requeued", state.name)
            for workload in workloads:
                state.queue.push(workload)
            return False
        chunk = Chunk(key, workloads, task, worker)
        self.workers.placed(worker)
        for workload in workloads:
            workload.chunk_key = key
            workload.version = state.version
            state.running[workload.id] = workload
        state.chunks_in_flight += 1
        self._metrics.chunk_size.labels(state.name).observe(len(workloads))
        self._chunks[key] = chunk
        chunk.collector = self._tasks.spawn(self._collect(state, chunk))
        return True

    # cancel ------------------------------------------------------------------------------
    def cancel_if_abandoned(self, workload: WorkloadState) -> None:
        """Cancel the task of a chunk whose workloads were all cancelled."""
        chunk = self._chunks.get(workload.chunk_key or "")
        if chunk is not None and all(w.status.finished for w in chunk.workloads):
            self._tasks.spawn(self._cancel_task(chunk.task))

    async def _cancel_task(self, task: TaskHandle) -> None:
        try:
            await self.backend.cancel(task)
        except Exception as exc:
            logger.warning("could not cancel the task %s: %s", task.key, exc)

    # outcomes ----------------------------------------------------------------------------
    async def _collect(self, state: APIState, chunk: Chunk) -> None:
        try:
            outcomes = await self.outcomes.wait(state, chunk)
        finally:
            self._chunks.pop(chunk.key, None)
            self.backend.release(chunk.task)
            state.chunks_in_flight -= 1
            self.workers.left(chunk.worker)
            self.wake()
        await self.outcomes.settle(state, chunk, outcomes)
        recycle = next((o.get("worker") for o in outcomes or () if o.get("recycle")), None)
        if recycle:
            # A hung predict was left in that worker process, and this was its last chunk:
            # now that its outcomes are applied, the process is replaced.
            self._tasks.spawn(self._recycle(chunk.task, recycle))

    async def _recycle(self, task: TaskHandle, worker: str) -> None:
        try:
            await self.backend.recycle_worker(task, worker)
        except Exception as exc:
            logger.warning("could not restart the worker %s: %s", worker, exc)

    def _on_stream(self, state: APIState, message: StreamMessage) -> None:
        """Outputs and log lines of a running chunk: to the event hub, per workload, unless
        they come from a run that is no longer the workload's (a requeued chunk's)."""
        if self.events is None:
            return
        key = message.get("key")
        chunk = self._chunks.get(key or "")
        if chunk is None:
            return
        by_workload: dict[str, list[StreamItem]] = {}
        for item in message.get("items", ()):
            by_workload.setdefault(item.get("id", ""), []).append(item)
        for workload_id, items in by_workload.items():
            workload = state.running.get(workload_id)
            if workload is None or workload.status.finished or workload.chunk_key != key:
                continue
            if not chunk.announced:
                # The worker sends a chunk's start before its items; should it be lost, the
                # items announce the run. (Dask running the same task again on another worker,
                # after a worker died, sends a start again: that is a new attempt.)
                self._on_event(
                    {
                        "kind": "start",
                        "api": state.name,
                        "ids": [workload_id],
                        "key": key,
                        "t": float(items[0].get("t") or time.time()),
                    }
                )
            self.events.stream(workload, key, items)

    def _on_outcomes(self, message: OutcomesEvent) -> None:
        chunk = self._chunks.get(message.get("key", ""))
        if chunk is not None:
            chunk.arrived = message["outcomes"]

    def requeue(self, state: APIState, workload: WorkloadState) -> None:
        """Back into its API's queue, to run again (as a new attempt)."""
        workload.chunk_key = None
        workload.retry_at = None
        workload.status = Status.IN_QUEUE
        workload.progress = None
        state.running.pop(workload.id, None)
        state.queue.push(workload)
        self.wake()

    # events from workers -----------------------------------------------------------------
    def _on_event(self, message: WorkerEvent | StreamMessage) -> None:
        state = self.apis.get(message.get("api", ""))
        if state is None:
            return
        if message["kind"] == "stream":
            self._on_stream(state, message)
            return
        for workload_id in message.get("ids", ()):
            workload = state.running.get(workload_id)
            if workload is None or workload.status.finished:
                continue
            if message["kind"] == "start":
                chunk = self._chunks.get(workload.chunk_key or "")
                if chunk is None or chunk.key != message.get("key"):
                    continue
                chunk.announced = True
                workload.attempts += 1
                workload.status = Status.IN_PROGRESS
                workload.started_at = message.get("t") or time.time()
                if workload.attempts == 1:
                    self._metrics.queue_wait.labels(state.name).observe(
                        workload.started_at - workload.created_at
                    )
                if self.events is not None:
                    self.events.started(workload, chunk.key, workload.started_at, chunk.worker)
            elif message["kind"] == "progress":
                workload.progress = {
                    "fraction": message.get("fraction"),
                    "message": message.get("message"),
                }
                if self.events is not None:
                    self.events.progress(workload, message.get("fraction"), message.get("message"))
