"""What the end of a chunk means for its workloads: results, retries with backoff, requeues.

A chunk's outcomes come from the `OutcomesEvent` that preceded its end on the scheduler's
stream, else as the task's result. Each workload then ends (completed or failed), waits out a
retry backoff, or goes back to the queue; nothing is ever dropped: outcomes that cannot be
persisted send their workloads back to the queue too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from ..contract.status import APIPhase, Status
from ..contract.tasks import ErrorRecord, Outcome, error_record
from .api_state import APIState
from .backends.base import TaskCancelled, TaskFailed, TaskHandle
from .workload import Ending, WorkloadState

logger = logging.getLogger(__name__)
_MAX_RETRY_DELAY_S = 3600.0


def retry_delay(backoff_s: float, attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: `backoff_s`, doubled for each attempt since the
    first, at most an hour."""
    return float(min(backoff_s * 2 ** max(0, attempts - 1), _MAX_RETRY_DELAY_S))


class FinishMany(Protocol):
    def __call__(self, state: APIState, endings: list[Ending]) -> Awaitable[None]:
        """Persist the final records, then make them visible; raises when they cannot be."""


Requeue = Callable[[APIState, WorkloadState], None]


class Chunk:
    __slots__ = ("announced", "arrived", "collector", "key", "lost", "task", "worker", "workloads")

    def __init__(
        self, key: str, workloads: list[WorkloadState], task: TaskHandle, worker: str | None
    ) -> None:
        self.key = key
        self.workloads = workloads
        self.task = task
        self.worker = worker
        self.announced = False  # a worker said "started" (a chunk ending within ms does not)
        self.lost = False  # handed to a scheduler that is gone: its task may never end
        self.arrived: list[Outcome] | None = None  # outcomes that came as an event
        self.collector: asyncio.Task[None] | None = None

    def unfinished(self) -> list[WorkloadState]:
        """Its workloads that are still its own: not finished, not moved on since."""
        return [w for w in self.workloads if not w.status.finished and w.chunk_key == self.key]


class OutcomeHandler:
    def __init__(self, apis: Mapping[str, APIState], finish: FinishMany, requeue: Requeue):
        self.apis = apis
        self.finish = finish
        self.requeue = requeue

    async def wait(self, state: APIState, chunk: Chunk) -> list[Outcome] | None:
        """Until the chunk's task ends: its outcomes, or None when it must run again.

        A task that failed as a whole fails its workloads here (an empty list comes back)."""
        try:
            return await self._outcomes_of(chunk)
        except asyncio.CancelledError:
            if not chunk.lost:
                raise
            return None
        except TaskCancelled:
            # We cancel only chunks whose workloads were all cancelled; anything left was
            # cancelled by Dask (a lost scheduler connection): run it again.
            return None
        except TaskFailed as exc:
            await self._chunk_failed(state, chunk, exc)
            return []

    async def settle(self, state: APIState, chunk: Chunk, outcomes: list[Outcome] | None) -> None:
        """Apply what `wait` found, once the chunk's slot is free for the next one."""
        if outcomes is None:
            # Lost with its scheduler, or its outcomes event never came: run it again.
            for workload in chunk.unfinished():
                self.requeue(state, workload)
        elif outcomes:
            await self.apply(state, chunk, outcomes)

    @staticmethod
    async def _outcomes_of(chunk: Chunk) -> list[Outcome] | None:
        """The outcomes from the event that preceded the task's end on the scheduler's stream,
        else fetched from the worker as the task's result."""
        await chunk.task.wait()
        if chunk.arrived is not None:
            return chunk.arrived
        result: list[Outcome] | None = await chunk.task.result()
        return result

    async def _chunk_failed(self, state: APIState, chunk: Chunk, exc: TaskFailed) -> None:
        live = chunk.unfinished()
        # WorkerLost: Dask already re-ran the task on other workers; it gives up only after that.
        error = error_record(exc.cause, "WorkerLost" if exc.workers_lost else None)
        for workload in live:
            workload.chunk_key = None
        await self.finish_or_requeue(state, [(w, Status.FAILED, error) for w in live])

    async def apply(self, state: APIState, chunk: Chunk, outcomes: list[Outcome]) -> None:
        by_id = {w.id: w for w in chunk.workloads}
        endings: list[Ending] = []
        init_failed: ErrorRecord | None = None
        for outcome in outcomes:
            workload = by_id.get(outcome["id"])
            if workload is None or workload.status.finished or workload.chunk_key != chunk.key:
                continue
            workload.chunk_key = None
            if not chunk.announced:
                workload.attempts += 1  # this run was never announced: count it now
            workload.started_at = workload.started_at or outcome.get("started_at")
            if outcome.get("init_failed"):
                init_failed = outcome.get("error")
                self.requeue(state, workload)
            elif outcome["ok"]:
                workload.finished_at = outcome.get("finished_at")
                workload.result_content_type = outcome.get("content_type")
                workload.result_size = outcome.get("size")
                workload.result_data = outcome.get("data")
                workload.result_stored = bool(outcome.get("stored"))
                workload.progress = None
                endings.append((workload, Status.COMPLETED, None))
            elif workload.attempts <= state.options.max_retries:
                self.retry_later(state, workload)
            else:
                workload.finished_at = outcome.get("finished_at")
                endings.append((workload, Status.FAILED, outcome.get("error")))
        if init_failed is not None and state.state is not APIPhase.ERROR:
            state.state, state.error = APIPhase.ERROR, init_failed
        await self.finish_or_requeue(state, endings)

    async def finish_or_requeue(self, state: APIState, endings: list[Ending]) -> None:
        """Outcomes that cannot be persisted are not lost: their workloads run again."""
        try:
            await self.finish(state, endings)
        except Exception:
            logger.exception("requeueing %d workloads of %s", len(endings), state.name)
            for workload, _, _ in endings:
                if not workload.status.finished:
                    self.requeue(state, workload)

    def retry_later(self, state: APIState, workload: WorkloadState) -> None:
        delay = retry_delay(state.options.retry_backoff_s, workload.attempts)
        workload.status = Status.IN_QUEUE
        workload.retry_at = time.time() + delay
        state.running.pop(workload.id, None)

        def requeue() -> None:
            if not workload.status.finished and self.apis.get(state.name) is state:
                self.requeue(state, workload)

        asyncio.get_running_loop().call_later(delay, requeue)
