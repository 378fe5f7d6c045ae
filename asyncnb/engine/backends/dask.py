"""The Dask backend: the one module of the engine that touches distributed.

It holds the gateway's asynchronous Dask client, and hides what distributed asks of its users:
reconnecting after the client gave up, subscribing again on a new scheduler, waiting for a task
without fetching its result, and releasing ended tasks without a message of their own.

A cluster the gateway owns comes with a `ClusterRestarter` (given by the composition root,
`server.cluster.OwnedCluster`): when its scheduler stopped (or stays unreachable for
`restart_after_s`), the backend has a new cluster started in its place rather than reconnect to
an address nobody listens on again, and reports the change as any replaced scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from distributed import Client, Future
from distributed.scheduler import KilledWorker

from ...contract.tasks import EVENT_TOPIC, OUTCOMES_TOPIC, ChunkItem, ChunkSpec
from ...runtime.chunks import run_chunk, warm
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

logger = logging.getLogger(__name__)
# How long a restart may take, the fresh process included (the Nanny itself gives the old
# process 4 s to close, then kills it; the hung thread is a daemon, out of Dask's executor).
_RESTART_TIMEOUT_S = 30.0
_FORGET_TIMEOUT_S = 5.0
_UNSTICK_AGAIN_S = 2.0
_CLIENT_CLOSE_TIMEOUT_S = 5.0
# After a failed cluster restart, the next waits this long, doubled each failure up to the max.
_RESTART_BACKOFF_S = (1.0, 60.0)


class ClusterRestarter(Protocol):
    """A cluster this gateway owns, as far as the backend restarts it."""

    def scheduler_stopped(self) -> bool:
        """Whether the cluster's scheduler has stopped (closed, failed) for good."""
        ...

    async def restart(self) -> Client:
        """Close what is left of the cluster, start a new one with the same settings, and
        return an asynchronous client of it."""
        ...


class DaskTask:
    __slots__ = ("future", "key")

    def __init__(self, future: Future) -> None:
        self.future = future
        self.key = str(future.key)

    async def wait(self) -> None:
        # `exception()` waits for the task's end and fetches nothing (`await future` would
        # fetch the result from the worker).
        error = await self.future.exception()
        if self.future.cancelled():
            raise TaskCancelled(f"Dask cancelled the task {self.key}")
        if error is not None:
            try:
                await self.future  # raises the task's exception with its traceback
            except Exception as exc:
                raise TaskFailed(exc, workers_lost=isinstance(exc, KilledWorker)) from exc
            raise TaskFailed(error)

    async def result(self) -> Any:
        await self.wait()
        return await self.future


class DaskBackend:
    def __init__(
        self,
        client: Client,
        *,
        reconnect_timeout_s: float = 5.0,
        restarter: ClusterRestarter | None = None,
        restart_after_s: float = 60.0,
        restart_backoff_s: tuple[float, float] = _RESTART_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.reconnect_timeout_s = reconnect_timeout_s
        self.restarter = restarter
        self.restart_after_s = restart_after_s
        self.restarts = 0  # new clusters started in place of one whose scheduler stopped
        self._backoff_s = restart_backoff_s
        self._clock = clock
        self._unreachable_since: float | None = None
        self._restart_pending = False  # until a new cluster is up
        self._next_restart = 0.0
        self._failed_restarts = 0
        # kept: a client that closed may no longer say where its scheduler was
        self._address: str = client.scheduler.address
        self._handlers: tuple[EventHandler, OutcomesHandler] | None = None
        self._scheduler_id: str | None = None
        self._changed = False
        # Ended tasks are released behind the next submit, never on their own: a lone release
        # opens the Dask client's 10 ms batching window, and a submit right after it would
        # wait that out (+5 ms p50 for back-to-back workloads).
        self._ended: list[Future] = []
        self._recycling: set[str] = set()  # workers being restarted
        # chunks submitted with a preferred worker and not yet ended: key → (worker, future)
        self._placed: dict[str, tuple[str, Future]] = {}

    def subscribe(self, on_event: EventHandler, on_outcomes: OutcomesHandler) -> None:
        self._handlers = (on_event, on_outcomes)
        self._subscribe()

    def _subscribe(self) -> None:
        if self._handlers is None:
            return
        on_event, on_outcomes = self._handlers
        self.client.subscribe_topic(EVENT_TOPIC, lambda event: on_event(event[1]))
        self.client.subscribe_topic(OUTCOMES_TOPIC, lambda event: on_outcomes(event[1]))

    async def workers(self) -> WorkerSnapshot:
        gone = self._scheduler_gone()
        if gone is not None:
            await self._restart(gone)
        elif self.client.status in ("closing", "closed"):
            self._unreachable()
            await self._reconnect()
        self._ended.clear()  # whatever ended since the last submit goes now
        try:
            identity = await self.client.scheduler.identity(n_workers=-1)
        except Exception as exc:
            self._unreachable()
            raise BackendUnavailable(f"cannot reach the Dask scheduler: {exc}") from exc
        self._unreachable_since = None
        scheduler_id = identity.get("id")
        if self._scheduler_id is not None and scheduler_id != self._scheduler_id:
            logger.warning("the Dask scheduler was replaced: subscribing again")
            self._changed = True
            self._subscribe()
        self._scheduler_id = scheduler_id
        changed, self._changed = self._changed, False
        workers = {
            address: WorkerInfo(w.get("name", address), dict(w.get("resources") or {}))
            for address, w in identity.get("workers", {}).items()
        }
        return WorkerSnapshot(workers, scheduler_changed=changed)

    def _unreachable(self) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = self._clock()

    def _scheduler_gone(self) -> str | None:
        """Why the owned cluster needs a new scheduler; None if it does not (nor ever an
        external one)."""
        if self.restarter is None:
            return None
        if self._restart_pending or self.restarter.scheduler_stopped():
            return "the Dask cluster's scheduler stopped"
        since = self._unreachable_since
        if since is not None and self._clock() - since >= self.restart_after_s:
            return f"the Dask cluster's scheduler was unreachable for {self.restart_after_s:g} s"
        return None

    async def _restart(self, why: str) -> None:
        """A new cluster in place of the owned one whose scheduler is gone; at most one
        attempt per backoff interval, until one succeeds."""
        assert self.restarter is not None
        if not self._restart_pending:
            logger.warning("%s: starting a new cluster", why)
            self._restart_pending = True
        wait = self._next_restart - self._clock()
        if wait > 0:
            raise BackendUnavailable(f"{why}; starting a new cluster in {wait:.0f} s")
        self._forget_tasks()
        old = self.client
        try:
            await asyncio.wait_for(old.close(), _CLIENT_CLOSE_TIMEOUT_S)
        except Exception:  # a client of a dead scheduler: it only had to let go
            logger.debug("closing the client of the stopped scheduler failed", exc_info=True)
        try:
            client = await self.restarter.restart()
        except Exception as exc:
            low, high = self._backoff_s
            delay = min(high, low * 2**self._failed_restarts)
            self._failed_restarts += 1
            self._next_restart = self._clock() + delay
            logger.warning("could not start a new Dask cluster (again in %g s): %s", delay, exc)
            raise BackendUnavailable(f"cannot start a new Dask cluster: {exc}") from exc
        logger.warning("started a new Dask cluster: scheduler at %s", client.scheduler.address)
        self.client = client
        self._address = client.scheduler.address
        self._restart_pending = False
        self._failed_restarts = 0
        self._next_restart = 0.0
        self._unreachable_since = None
        self.restarts += 1
        self._scheduler_id = None
        self._changed = True  # the engine requeues what the old scheduler held
        self._subscribe()

    def _forget_tasks(self) -> None:
        """The futures of a client that is going: none may be released or cancelled later."""
        self._ended.clear()
        self._placed.clear()

    async def _reconnect(self) -> None:
        """Dask's client gives up after its connect timeout; a gateway must not."""
        address = self._address
        try:
            client = await Client(address, asynchronous=True, timeout=self.reconnect_timeout_s)
        except Exception as exc:
            raise BackendUnavailable(
                f"still cannot reach the Dask scheduler at {address}: {exc}"
            ) from exc
        logger.warning("reconnected to the Dask scheduler at %s", address)
        self.client = client
        self._scheduler_id = None
        self._changed = True  # reported with the next snapshot that succeeds
        self._subscribe()

    def submit_chunk(
        self,
        key: str,
        spec: ChunkSpec,
        items: list[ChunkItem],
        *,
        resources: dict[str, float],
        worker: str | None,
    ) -> DaskTask:
        placement: dict[str, Any] = {}
        if worker:
            # preferred, not required: if that worker dies, Dask runs the chunk elsewhere
            placement = {"workers": [worker], "allow_other_workers": True}
        future = self.client.submit(
            run_chunk,
            spec,
            items,
            key=key,
            resources=resources or None,
            pure=False,
            **placement,
        )
        self._ended.clear()
        if worker:
            self._placed[key] = (worker, future)
        return DaskTask(future)

    def submit_warm(self, key: str, spec: ChunkSpec, *, resources: dict[str, float]) -> DaskTask:
        future = self.client.submit(warm, spec, key=key, resources=resources or None, pure=False)
        return DaskTask(future)

    async def cancel(self, task: TaskHandle) -> None:
        # The client is asynchronous: `future.cancel()` alone returns a coroutine and does
        # nothing until awaited.
        assert isinstance(task, DaskTask)
        self._placed.pop(task.key, None)
        await self.client.cancel([task.future])

    def release(self, task: TaskHandle) -> None:
        assert isinstance(task, DaskTask)
        self._placed.pop(task.key, None)
        self._ended.append(task.future)

    async def recycle_worker(self, task: TaskHandle, worker: str) -> None:
        assert isinstance(task, DaskTask)
        # The chunk's (None) result lives on that worker: were the key still wanted when the
        # worker goes, the scheduler would run the chunk, hung predict and all, again. The
        # cancel goes by the client's batched stream, not as a request: wait until the
        # scheduler has forgotten the key before the restart (a request of its own).
        if task.future in self._ended:
            self._ended.remove(task.future)
        await self.client.cancel([task.future], force=True)
        deadline = time.monotonic() + _FORGET_TIMEOUT_S
        while time.monotonic() < deadline:
            states = await self.client.scheduler.get_task_status(keys=[task.key])
            if states.get(task.key) in (None, "released", "forgotten"):
                break
            await asyncio.sleep(0.02)
        else:
            logger.warning("the scheduler still holds %s: restarting its worker anyway", task.key)
        if worker in self._recycling:
            return
        self._recycling.add(worker)
        try:
            logger.warning("restarting the worker %s, which a hung predict was left in", worker)
            await self.client.restart_workers([worker], timeout=_RESTART_TIMEOUT_S)
            await self._unstick(worker)
            await asyncio.sleep(_UNSTICK_AGAIN_S)  # chunks placed in the meantime
            await self._unstick(worker)
        finally:
            self._recycling.discard(worker)

    async def _unstick(self, gone: str) -> None:
        """Cancel the chunks preferring `gone` that wait in Dask's `no-worker` state: the
        dispatcher then runs them again elsewhere (as any chunk Dask cancelled).

        distributed leaves a task whose (loose) worker restriction names a worker that left,
        and that found no other running worker then, unrunnable for good: a worker joining
        later is never offered it (`bulk_schedule_unrunnable_after_adding_worker` skips it).
        """
        placed = {key: f for key, (w, f) in self._placed.items() if w == gone}
        if not placed:
            return
        states = await self.client.scheduler.get_task_status(keys=list(placed))
        stuck = [placed[key] for key, state in states.items() if state == "no-worker"]
        if stuck:
            logger.warning("running %d chunks placed on %s again", len(stuck), gone)
            for future in stuck:
                self._placed.pop(str(future.key), None)
            await self.client.cancel(stuck, force=True)

    async def close(self) -> None:
        self._forget_tasks()
        await self.client.close()
