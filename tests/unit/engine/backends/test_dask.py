"""The Dask backend against real Dask, in this process: a scheduler and a worker on the test's
event loop (threads, no processes), as distributed's own `gen_cluster` tests run."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import cloudpickle
import pytest
from dask import config as dask_config
from distributed import Client, Scheduler, Worker

from asyncnb.contract.tasks import EVENT_TOPIC, ChunkSpec, OutcomesEvent, WorkerEvent
from asyncnb.engine.backends import BackendUnavailable, TaskCancelled, TaskFailed
from asyncnb.engine.backends.dask import DaskBackend

from ..harness import memory_storage, until


class Echo:
    def predict(self, payload: Any) -> Any:
        return {"echo": payload}


class Slow:
    def predict(self, payload: Any) -> Any:
        import time

        time.sleep(float(payload))
        return payload


def _spec(cls: type, **overrides: Any) -> ChunkSpec:
    storage = memory_storage()
    api = cls.__name__.lower()
    storage.write_bytes(storage.predictor_path(api, 1), pickle.dumps((cloudpickle.dumps(cls), {})))
    spec: ChunkSpec = {
        "api": api,
        "version": 1,
        "storage": storage.describe(),
        "inline_limit": 1024 * 1024,
        "max_batch_size": 1,
        "max_concurrency": 1,
        "timeout_s": None,
        "outcomes_by_event": True,
    }
    return {**spec, **overrides}  # type: ignore[typeddict-item]


@asynccontextmanager
async def dask(resources: dict[str, float] | None = None) -> AsyncIterator[DaskBackend]:
    async with (
        Scheduler(host="127.0.0.1", port=0, dashboard=False) as scheduler,
        Worker(scheduler.address, host="127.0.0.1", nthreads=2, resources=resources),
    ):
        client = await Client(scheduler.address, asynchronous=True)
        backend = DaskBackend(client, reconnect_timeout_s=0.5)
        try:
            yield backend
        finally:
            await backend.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_small_outcomes_come_by_event_and_the_task_is_awaited_without_a_fetch() -> None:
    async def scenario() -> None:
        async with dask() as backend:
            events: list[WorkerEvent] = []
            outcomes: list[OutcomesEvent] = []
            backend.subscribe(events.append, outcomes.append)
            items = [{"id": "1" * 32, "content_type": "application/json", "body": b"1"}]
            task = backend.submit_chunk(
                "asyncnb-echo-1", _spec(Echo), items, resources={}, worker=None
            )
            await task.wait()
            await until(lambda: outcomes)
            [event] = outcomes
            assert event["key"] == "asyncnb-echo-1"
            assert event["outcomes"][0]["data"] == b'{"echo": 1}'
            assert await task.result() is None  # the outcomes went by event, not as the result
            backend.release(task)

    run(scenario)


def test_outcomes_too_large_for_an_event_are_the_tasks_result() -> None:
    async def scenario() -> None:
        async with dask() as backend:
            backend.subscribe(lambda event: None, lambda event: None)
            items = [{"id": "a" * 32, "content_type": "text/plain", "body": b"x" * 40_000}]
            task = backend.submit_chunk(
                "asyncnb-echo-2", _spec(Echo), items, resources={}, worker=None
            )
            [outcome] = await task.result()
            assert outcome["ok"] and outcome["size"] > 40_000

    run(scenario)


def test_warm_builds_the_predictor_and_workers_are_listed_with_their_resources() -> None:
    async def scenario() -> None:
        async with dask(resources={"GPU": 1}) as backend:
            snapshot = await backend.workers()
            [info] = snapshot.workers.values()
            assert info.resources == {"GPU": 1} and not snapshot.scheduler_changed
            task = backend.submit_warm("asyncnb-warm-echo", _spec(Echo), resources={"GPU": 1})
            assert await task.result() == {"ok": True}

    run(scenario)


def test_a_cancelled_task_ends_cancelled_and_a_broken_one_failed() -> None:
    async def scenario() -> None:
        async with dask() as backend:
            backend.subscribe(lambda event: None, lambda event: None)
            slow = [{"id": "b" * 32, "content_type": "application/json", "body": b"0.2"}]
            task = backend.submit_chunk(
                "asyncnb-slow", _spec(Slow), slow, resources={}, worker=None
            )
            await backend.cancel(task)
            with pytest.raises(TaskCancelled):
                await task.wait()
            broken = _spec(Echo)
            del broken["api"]  # type: ignore[misc]  # run_chunk itself raises
            failing = backend.submit_chunk("asyncnb-broken", broken, [], resources={}, worker=None)
            with pytest.raises(TaskFailed) as failed:
                await failing.wait()
            assert isinstance(failed.value.cause, KeyError) and not failed.value.workers_lost

    run(scenario)


def test_a_closed_client_is_replaced_and_the_change_reported() -> None:
    async def scenario() -> None:
        async with dask() as backend:
            await backend.client.close()
            snapshot = await backend.workers()
            assert snapshot.scheduler_changed and len(snapshot.workers) == 1
            assert not (await backend.workers()).scheduler_changed  # reported once

    run(scenario)


def test_an_unreachable_scheduler_is_reported_as_unavailable() -> None:
    async def scenario() -> None:
        async with dask() as backend:
            pass
        # the scheduler is gone now: reconnecting fails, within the reconnect timeout
        with pytest.raises(BackendUnavailable):
            await backend.workers()

    run(scenario)


def test_recycle_forgets_the_task_before_it_restarts_the_worker() -> None:
    """Were the chunk's key still wanted, the restart would make Dask run the chunk again."""

    async def scenario() -> None:
        async with dask() as backend:
            backend.subscribe(lambda event: None, lambda event: None)
            items = [{"id": "b" * 32, "content_type": "application/json", "body": b"1"}]
            task = backend.submit_chunk(
                "asyncnb-echo-3", _spec(Echo), items, resources={}, worker=None
            )
            await task.wait()
            backend.release(task)
            [worker] = (await backend.workers()).workers
            restarted: list[tuple[list[str], Any]] = []

            async def restart_workers(workers: list[str], **kw: Any) -> None:
                states = await backend.client.scheduler.get_task_status(keys=[task.key])
                restarted.append((workers, states.get(task.key)))

            backend.client.restart_workers = restart_workers  # type: ignore[method-assign]
            await backend.recycle_worker(task, worker)
            assert restarted == [([worker], None)]  # the scheduler had forgotten the key

    run(scenario)


def test_recycle_runs_again_the_chunks_stuck_on_the_worker_that_left() -> None:
    """Dask never offers a later worker a task whose loose restriction names a worker that
    left while no other ran: those chunks are cancelled, so the dispatcher runs them again."""

    class FakeFuture:
        def __init__(self, key: str) -> None:
            self.key = key

    class FakeScheduler:
        address = "tcp://scheduler:8786"

        def __init__(self) -> None:
            self.states = {"asyncnb-old": None, "asyncnb-a": "no-worker", "asyncnb-b": "processing"}

        async def get_task_status(self, keys: list[str]) -> dict[str, Any]:
            return {key: self.states.get(key) for key in keys}

    class FakeClient:
        def __init__(self) -> None:
            self.scheduler = FakeScheduler()
            self.cancelled: list[str] = []
            self.restarted: list[str] = []

        async def cancel(self, futures: list[FakeFuture], force: bool = False) -> None:
            self.cancelled.extend(str(f.key) for f in futures)

        async def restart_workers(self, workers: list[str], **kw: Any) -> None:
            self.restarted.extend(workers)

    async def scenario() -> None:
        import asyncnb.engine.backends.dask as module

        client = FakeClient()
        backend = DaskBackend(client)  # type: ignore[arg-type]
        for key, worker in [("asyncnb-a", "tcp://w1"), ("asyncnb-b", "tcp://w1")]:
            backend._placed[key] = (worker, FakeFuture(key))  # type: ignore[assignment]
        backend._placed["asyncnb-c"] = ("tcp://w2", FakeFuture("asyncnb-c"))  # type: ignore[assignment]
        old = module.DaskTask.__new__(module.DaskTask)
        old.future, old.key = FakeFuture("asyncnb-old"), "asyncnb-old"  # type: ignore[assignment]
        saved = module._UNSTICK_AGAIN_S
        module._UNSTICK_AGAIN_S = 0.0
        try:
            await backend.recycle_worker(old, "tcp://w1")
        finally:
            module._UNSTICK_AGAIN_S = saved
        assert client.restarted == ["tcp://w1"]
        assert client.cancelled == ["asyncnb-old", "asyncnb-a"]  # the ended one, the stuck one
        assert set(backend._placed) == {"asyncnb-b", "asyncnb-c"}

    run(scenario)


# an HTTP server (it starts even without a dashboard) on a free port, not on 8787
SCHEDULER: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "dashboard": False,
    "dashboard_address": "127.0.0.1:0",
}


class Restarter:
    """The composition root's `ClusterRestarter` (server.cluster.OwnedCluster) in small: the
    'cluster' is an in-process scheduler and worker; `restart` starts another pair."""

    def __init__(self, scheduler: Scheduler, *, fail: int = 0) -> None:
        self.scheduler = scheduler
        self.fail = fail  # restarts that fail before one succeeds
        self.calls = 0
        self.stopped_known = True  # whether the scheduler's status tells it stopped
        self.started: list[Scheduler | Worker] = []

    def scheduler_stopped(self) -> bool:
        return self.stopped_known and self.scheduler.status.name in ("closing", "closed")

    async def restart(self) -> Client:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("no room for a new cluster")
        self.scheduler = await Scheduler(**SCHEDULER)
        worker = await Worker(self.scheduler.address, host="127.0.0.1", nthreads=1)
        self.started += [worker, self.scheduler]
        return await Client(self.scheduler.address, asynchronous=True)

    async def close(self) -> None:
        for server in self.started:
            await server.close()


@asynccontextmanager
async def owned_dask(
    clock: Callable[[], float], **restarter: Any
) -> AsyncIterator[tuple[DaskBackend, Restarter, Scheduler]]:
    """A backend of a cluster 'the gateway owns' (a restarter), on a scheduler of its own."""
    with dask_config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        scheduler = await Scheduler(**SCHEDULER)
        worker = await Worker(scheduler.address, host="127.0.0.1", nthreads=1)
        client = await Client(scheduler.address, asynchronous=True)
        owned = Restarter(scheduler, **restarter)
        backend = DaskBackend(
            client, reconnect_timeout_s=0.5, restarter=owned, restart_after_s=30.0, clock=clock
        )
        try:
            yield backend, owned, scheduler
        finally:
            await backend.close()
            await owned.close()
            await worker.close()
            await scheduler.close()


def test_a_stopped_scheduler_of_an_owned_cluster_is_replaced_by_a_new_cluster(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with owned_dask(time.monotonic) as (backend, owned, scheduler):
            events: list[WorkerEvent] = []
            backend.subscribe(events.append, lambda event: None)
            assert not (await backend.workers()).scheduler_changed
            with caplog.at_level(logging.WARNING, "asyncnb.engine.backends.dask"):
                await scheduler.close()  # as `Client(address).shutdown()` would
                snapshot = await backend.workers()
            assert snapshot.scheduler_changed and len(snapshot.workers) == 1
            assert owned.calls == 1 and backend.restarts == 1
            assert backend.client.scheduler.address == owned.scheduler.address
            assert "scheduler stopped: starting a new cluster" in caplog.text
            assert not (await backend.workers()).scheduler_changed  # reported once
            # subscribed again, on the new scheduler (once the subscription has reached it)
            hello = {"kind": "hello"}

            def arrived() -> bool:
                owned.scheduler.log_event(EVENT_TOPIC, hello)
                return bool(events)

            await until(arrived)
            assert events[0] == hello

    run(scenario)


def test_a_failed_restart_is_tried_again_after_a_growing_backoff_not_at_once() -> None:
    now = [0.0]

    async def scenario() -> None:
        async with owned_dask(lambda: now[0], fail=2) as (backend, owned, scheduler):
            await scheduler.close()
            with pytest.raises(BackendUnavailable, match="cannot start a new Dask cluster"):
                await backend.workers()
            with pytest.raises(BackendUnavailable, match="starting a new cluster in 1 s"):
                await backend.workers()  # no second try within the backoff
            assert owned.calls == 1
            now[0] = 1.0
            with pytest.raises(BackendUnavailable):
                await backend.workers()
            assert owned.calls == 2
            now[0] = 2.5  # the backoff doubled: 2 s after the second failure
            with pytest.raises(BackendUnavailable):
                await backend.workers()
            assert owned.calls == 2
            now[0] = 3.0
            snapshot = await backend.workers()
            assert owned.calls == 3 and snapshot.scheduler_changed and snapshot.workers

    run(scenario)


def test_an_owned_scheduler_unreachable_past_the_bound_is_replaced() -> None:
    """A scheduler this process cannot see the status of (another process's) is given up on
    only once it stayed unreachable for `restart_after_s`."""
    now = [0.0]

    async def scenario() -> None:
        async with owned_dask(lambda: now[0]) as (backend, owned, scheduler):
            owned.stopped_known = False
            await scheduler.close()
            with pytest.raises(BackendUnavailable):
                await backend.workers()
            now[0] = 29.0
            with pytest.raises(BackendUnavailable):
                await backend.workers()
            assert owned.calls == 0
            now[0] = 30.0
            snapshot = await backend.workers()
            assert owned.calls == 1 and snapshot.scheduler_changed and snapshot.workers

    run(scenario)
