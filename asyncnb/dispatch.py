"""Dispatch: hands Dask only what the workers can start now, as chunks of queued workloads.

Dask's per-task cost decides throughput (see docs/architecture.md), so a backlog travels as
chunks of up to `max_chunk` workloads, one Dask task each, and every free slot gets its own
chunk so that a lone workload never waits for company.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

from . import runtime
from .aio import within
from .api_state import APIState
from .progress import EVENT_TOPIC, OUTCOMES_TOPIC
from .workload import Status, Workload

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger("asyncnb.dispatch")
_REFRESH_S = 0.5
RETRY_WAIT = "retry-wait"  # a workload's `chunk` while it waits out its retry backoff


class Chunk:
    __slots__ = ("announced", "collector", "future", "key", "lost", "worker", "workloads")

    def __init__(
        self, key: str, workloads: list[Workload], future: Any, worker: str | None
    ) -> None:
        self.key = key
        self.workloads = workloads
        self.future = future
        self.worker = worker
        self.announced = False  # a worker said "started" (a chunk ending within ms does not)
        self.lost = False  # handed to a scheduler that is gone: its future may never resolve
        self.collector: asyncio.Task[None] | None = None


def _error_of(exc: BaseException, type_name: str | None = None) -> dict[str, str]:
    return {
        "type": type_name or type(exc).__name__,
        "message": str(exc)[:4000],
        "traceback": "".join(traceback.format_exception(exc))[-20000:],
    }


def _satisfies(offered: dict[str, float], wanted: dict[str, float]) -> bool:
    return all(offered.get(name, 0) >= amount for name, amount in wanted.items())


class Dispatcher:
    def __init__(self, engine: Engine, client: Any) -> None:
        self.engine = engine
        self.client = client
        self._wake = asyncio.Event()
        self._worker_resources: dict[str, dict[str, float]] = {}
        self._chunks_on: dict[str, int] = {}  # worker address → our chunks running there
        self._worker_names: dict[str, Any] = {}
        self._warming = 0
        self._warmups: set[asyncio.Task[None]] = set()
        self._scheduler_id: str | None = None
        self._chunks: dict[str, Chunk] = {}  # by Dask key
        self._outcomes: dict[str, list[dict[str, Any]]] = {}  # arrived as events, by key
        self._done_futures: list[Any] = []  # collected; their release waits for a dispatch
        self._last_refresh = 0.0
        self._closing = False

    async def start(self) -> None:
        self._subscribe()
        await self._refresh_workers()
        self.engine.spawn(self._run())

    def _subscribe(self) -> None:
        self.client.subscribe_topic(EVENT_TOPIC, self._on_event)
        self.client.subscribe_topic(OUTCOMES_TOPIC, self._on_outcomes)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # workers -----------------------------------------------------------------------------
    async def _refresh_workers(self) -> None:
        if self.client.status in ("closing", "closed"):
            await self._reconnect()
            return
        try:
            identity = await self.client.scheduler.identity(n_workers=-1)
        except Exception as exc:
            logger.warning("cannot reach the Dask scheduler: %s", exc)
            # Nothing is dispatched to workers we cannot see; they may be gone for good.
            self._worker_resources, self._worker_names = {}, {}
            for state in self.engine.apis.values():
                self.count_workers(state)
            return
        scheduler_id = identity.get("id")
        if self._scheduler_id is not None and scheduler_id != self._scheduler_id:
            self._scheduler_restarted()
        self._scheduler_id = scheduler_id
        workers = identity.get("workers", {})
        self._worker_resources = {
            address: dict(w.get("resources") or {}) for address, w in workers.items()
        }
        self._worker_names = {address: w.get("name", address) for address, w in workers.items()}
        self._last_refresh = time.monotonic()
        for state in self.engine.apis.values():
            self.count_workers(state)

    def _scheduler_restarted(self) -> None:
        """A new scheduler knows neither our subscription, our warm-ups nor our chunks."""
        logger.warning("the Dask scheduler was replaced: resubscribing and re-warming APIs")
        self._subscribe()
        # Chunks handed to the old scheduler are lost, even those whose futures still look
        # pending (and may stay so for good): stop waiting for them and requeue their work.
        for chunk in list(self._chunks.values()):
            chunk.lost = True
            if chunk.collector is not None:
                chunk.collector.cancel()
        for task in list(self._warmups):
            task.cancel()
        for state in self.engine.apis.values():
            if state.state != APIState.ERROR:
                self.warm(state)

    async def _reconnect(self) -> None:
        """Dask's client gives up after its connect timeout; a gateway must not."""
        from distributed import Client

        address = self.client.scheduler.address
        try:
            client = await Client(address, asynchronous=True, timeout=5)
        except Exception as exc:
            logger.warning("still cannot reach the Dask scheduler at %s: %s", address, exc)
            return
        logger.warning("reconnected to the Dask scheduler at %s", address)
        self.client = client
        self._scheduler_id = None
        self._scheduler_restarted()

    def count_workers(self, state: APIState) -> None:
        wanted = state.options.dask_resources()
        state.workers = sum(
            1 for offered in self._worker_resources.values() if _satisfies(offered, wanted)
        )

    def worker_addresses(self) -> list[str]:
        return list(self._worker_resources)

    def worker_name(self, address: str) -> Any:
        return self._worker_names.get(address, address)

    def is_idle(self, address: str) -> bool:
        """No chunk of ours runs or waits there (and no deploy warm-up is pending)."""
        return not self._chunks_on.get(address) and not self._warming

    # deploy warm-up ----------------------------------------------------------------------
    def warm(self, state: APIState) -> None:
        self.count_workers(state)
        task = self.engine.spawn(self._warm(state, state.version))
        self._warmups.add(task)
        task.add_done_callback(self._warmups.discard)

    async def _warm(self, state: APIState, version: int) -> None:
        self._warming += 1
        try:
            await self._warm_once(state, version)
        finally:
            self._warming -= 1

    async def _warm_once(self, state: APIState, version: int) -> None:
        future = self.client.submit(
            runtime.warm,
            self.engine.worker_spec(state),
            key=f"asyncnb-warm-{state.name}-v{version}-{uuid.uuid4().hex[:8]}",
            resources=state.options.dask_resources() or None,
            pure=False,
        )
        try:
            outcome = await future
        except Exception as exc:
            if future.cancelled():
                return  # the scheduler went away; warming starts again once it is back
            outcome = {"ok": False, "error": _error_of(exc)}
        if self.engine.apis.get(state.name) is not state or state.version != version:
            return
        if outcome["ok"]:
            state.state, state.error = APIState.READY, None
        else:
            state.state, state.error = APIState.ERROR, outcome["error"]
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
            submitted = 0
            if time.monotonic() - self._last_refresh >= _REFRESH_S:
                await self._refresh_workers()
                submitted = len(self._done_futures)  # release now whatever is left
            for state in list(self.engine.apis.values()):
                try:
                    submitted += self._dispatch(state)
                except Exception:
                    logger.exception("dispatch of %s failed", state.name)
            if submitted:
                # Finished futures are released behind a submit, never on their own: a lone
                # release opens the Dask client's 10 ms batching window, and a submit right
                # after it would wait that out (+5 ms p50 for back-to-back workloads).
                self._done_futures.clear()

    def _dispatch(self, state: APIState) -> int:
        """Hand the workers what they can start now; how many chunks were submitted."""
        if state.state != APIState.READY or not len(state.queue):
            return 0
        options = state.options
        slots = state.workers * options.max_concurrency
        batch = options.max_batch_size
        limit = max(self.engine.settings.max_chunk, batch)
        # Under a backlog, one chunk more per slot waits on the worker (behind its concurrency
        # gate), so a slot starts its next chunk without a round trip through the gateway.
        # Only a backlog that gives every slot a full chunk is prefetched: splitting a shorter
        # one into more, smaller chunks costs more Dask round trips than it saves (measured in
        # docs/benchmarks.md), and a higher priority arriving next must still go first.
        backlog = len(state.queue) >= slots * limit
        in_flight_limit = slots * (1 + (self.engine.settings.prefetch if backlog else 0))
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
            if not workloads:
                break
            self._submit(state, workloads)
            free -= 1
            submitted += 1
        return submitted

    def _least_loaded_worker(self, state: APIState) -> str | None:
        """Spread chunks evenly: Dask alone may stack them on one multi-threaded worker."""
        wanted = state.options.dask_resources()
        eligible = [a for a, r in self._worker_resources.items() if _satisfies(r, wanted)]
        if not eligible:
            return None
        return min(eligible, key=lambda address: self._chunks_on.get(address, 0))

    def _submit(self, state: APIState, workloads: list[Workload]) -> None:
        key = f"asyncnb-{state.name}-{uuid.uuid4().hex}"
        worker = self._least_loaded_worker(state)
        items = [{"id": w.id, "content_type": w.content_type, "body": w.body} for w in workloads]
        try:
            future = self._submit_chunk(state, items, key, worker)
        except Exception:
            logger.exception("could not hand a chunk of %s to Dask; requeued", state.name)
            for workload in workloads:
                state.queue.push(workload)
            return
        chunk = Chunk(key, workloads, future, worker)
        if worker:
            self._chunks_on[worker] = self._chunks_on.get(worker, 0) + 1
        for workload in workloads:
            workload.chunk = chunk
            workload.version = state.version
            state.running[workload.id] = workload
        state.chunks_in_flight += 1
        self.engine.metrics.chunk_size.labels(state.name).observe(len(workloads))
        self._chunks[key] = chunk
        chunk.collector = self.engine.spawn(self._collect(state, chunk))

    def _submit_chunk(
        self, state: APIState, items: list[dict[str, Any]], key: str, worker: str | None
    ) -> Any:
        return self.client.submit(
            runtime.run_chunk,
            self.engine.worker_spec(state),
            items,
            key=key,
            resources=state.options.dask_resources() or None,
            workers=[worker] if worker else None,
            allow_other_workers=True,  # if that worker dies, Dask runs the chunk elsewhere
            pure=False,
        )

    def cancel_if_abandoned(self, workload: Workload) -> None:
        """Cancel the Dask task of a chunk whose workloads were all cancelled."""
        chunk = workload.chunk
        if isinstance(chunk, Chunk) and all(w.status.finished for w in chunk.workloads):
            self.engine.spawn(self._cancel_task(chunk))

    async def _cancel_task(self, chunk: Chunk) -> None:
        # The client is asynchronous: `future.cancel()` alone returns a coroutine and does
        # nothing until awaited.
        try:
            await self.client.cancel([chunk.future])
        except Exception as exc:
            logger.warning("could not cancel the Dask task %s: %s", chunk.key, exc)

    # outcomes ----------------------------------------------------------------------------
    async def _collect(self, state: APIState, chunk: Chunk) -> None:
        outcomes: list[dict[str, Any]] | None = []
        try:
            outcomes = await self._outcomes_of(chunk)
        except asyncio.CancelledError:
            if not chunk.lost:
                raise
            outcomes = None
        except Exception as exc:
            await self._chunk_failed(state, chunk, exc)
        finally:
            self._chunks.pop(chunk.key, None)
            self._outcomes.pop(chunk.key, None)
            self._done_futures.append(chunk.future)
            state.chunks_in_flight -= 1
            if chunk.worker and self._chunks_on.get(chunk.worker):
                self._chunks_on[chunk.worker] -= 1
            self.wake()
        if outcomes is None:
            # Lost with its scheduler, or its outcomes event never came: run it again.
            for workload in chunk.workloads:
                if not workload.status.finished and workload.chunk is chunk:
                    self.engine.requeue(state, workload)
        elif outcomes:
            await self._apply(state, chunk, outcomes)

    async def _outcomes_of(self, chunk: Chunk) -> list[dict[str, Any]] | None:
        """The chunk's outcomes: from the event that preceded its end on the scheduler's
        stream, else fetched from the worker as the task's result. Raises what the task
        raised."""
        waiter = getattr(getattr(chunk.future, "_state", None), "wait", None)
        if waiter is not None:
            await waiter()  # done, without fetching the result
            arrived = self._outcomes.pop(chunk.key, None)
            if arrived is not None and chunk.future.status == "finished":
                return arrived
        result: list[dict[str, Any]] | None = await chunk.future
        return result

    def _on_outcomes(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        key = message.get("key")
        if key in self._chunks:
            self._outcomes[key] = message["outcomes"]

    async def _chunk_failed(self, state: APIState, chunk: Chunk, exc: Exception) -> None:
        live = [w for w in chunk.workloads if not w.status.finished and w.chunk is chunk]
        if chunk.future.cancelled():
            # We cancel only chunks whose workloads were all cancelled; anything left was
            # cancelled by Dask (a lost scheduler connection): run it again.
            for workload in live:
                self.engine.requeue(state, workload)
            return
        from distributed.scheduler import KilledWorker

        # KilledWorker: Dask already re-ran the task on other workers; give up only after that.
        error: dict[str, Any] = _error_of(
            exc, "WorkerLost" if isinstance(exc, KilledWorker) else None
        )
        endings: list[tuple[Workload, Status, dict[str, Any] | None]] = [
            (w, Status.FAILED, error) for w in live
        ]
        for workload in live:
            workload.chunk = None
        await self._finish_or_requeue(state, endings)

    async def _apply(self, state: APIState, chunk: Chunk, outcomes: list[dict[str, Any]]) -> None:
        by_id = {w.id: w for w in chunk.workloads}
        endings: list[tuple[Workload, Status, dict[str, Any] | None]] = []
        init_failed: dict[str, Any] | None = None
        for outcome in outcomes:
            workload = by_id.get(outcome["id"])
            if workload is None or workload.status.finished or workload.chunk is not chunk:
                continue
            workload.chunk = None
            if not chunk.announced:
                workload.attempts += 1  # this run was never announced: count it now
            workload.started_at = workload.started_at or outcome.get("started_at")
            if outcome.get("init_failed"):
                init_failed = outcome["error"]
                self.engine.requeue(state, workload)
            elif outcome["ok"]:
                workload.finished_at = outcome.get("finished_at")
                workload.result_content_type = outcome["content_type"]
                workload.result_size = outcome["size"]
                workload.result_data = outcome.get("data")
                workload.result_stored = bool(outcome.get("stored"))
                workload.progress = None
                endings.append((workload, Status.COMPLETED, None))
            elif workload.attempts <= state.options.max_retries:
                self._retry_later(state, workload)
            else:
                workload.finished_at = outcome.get("finished_at")
                endings.append((workload, Status.FAILED, outcome["error"]))
        if init_failed is not None and state.state != APIState.ERROR:
            state.state, state.error = APIState.ERROR, init_failed
        await self._finish_or_requeue(state, endings)

    async def _finish_or_requeue(
        self, state: APIState, endings: list[tuple[Workload, Status, dict[str, Any] | None]]
    ) -> None:
        """Outcomes that cannot be persisted are not lost: their workloads run again."""
        try:
            await self.engine.finish_many(state, endings)
        except Exception:
            logger.exception("requeueing %d workloads of %s", len(endings), state.name)
            for workload, _, _ in endings:
                if not workload.status.finished:
                    self.engine.requeue(state, workload)

    def _retry_later(self, state: APIState, workload: Workload) -> None:
        delay = state.options.retry_backoff_s * 2 ** max(0, workload.attempts - 1)
        workload.status = Status.IN_QUEUE
        workload.chunk = RETRY_WAIT
        state.running.pop(workload.id, None)

        def requeue() -> None:
            if not workload.status.finished and self.engine.apis.get(state.name) is state:
                self.engine.requeue(state, workload)

        asyncio.get_running_loop().call_later(min(delay, 3600.0), requeue)

    # events from workers -----------------------------------------------------------------
    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        state = self.engine.apis.get(message.get("api", ""))
        if state is None:
            return
        kind = message.get("kind")
        for workload_id in message.get("ids", ()):
            workload = state.running.get(workload_id)
            if workload is None or workload.status.finished:
                continue
            if kind == "start":
                chunk = workload.chunk
                if not isinstance(chunk, Chunk) or chunk.key != message.get("key"):
                    continue
                chunk.announced = True
                workload.attempts += 1
                workload.status = Status.IN_PROGRESS
                workload.started_at = message.get("t") or time.time()
                if workload.attempts == 1:
                    self.engine.metrics.queue_wait.labels(state.name).observe(
                        workload.started_at - workload.created_at
                    )
            elif kind == "progress":
                workload.progress = {
                    "fraction": message.get("fraction"),
                    "message": message.get("message"),
                }
