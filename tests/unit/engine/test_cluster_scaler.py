"""The worker pool, and the scaler acting on a cluster object (a stand-in with Dask's shape)."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncnb.engine.backends.base import WorkerInfo
from asyncnb.engine.cluster_scaler import ClusterScaler
from asyncnb.engine.workers import WorkerPool, satisfies

from .harness import ready_api


class Cluster:
    """What the scaler calls on a LocalCluster or SpecCluster; `scale` may be a coroutine."""

    def __init__(self, new_spec: dict[str, Any] | None = None, awaitable: bool = False) -> None:
        self.new_spec = new_spec or {"options": {"resources": {}}}
        self.awaitable = awaitable
        self.calls: list[tuple[str, Any]] = []

    def scale(self, n: int) -> Any:
        self.calls.append(("scale", n))
        return asyncio.sleep(0) if self.awaitable else None

    def scale_down(self, names: list[Any]) -> None:
        self.calls.append(("scale_down", names))


def pool(*addresses: str, **resources: float) -> WorkerPool:
    workers = WorkerPool()
    workers.update({a: WorkerInfo(a.rsplit("/", 1)[-1], dict(resources)) for a in addresses})
    return workers


def test_resources_are_satisfied_by_at_least_as_much() -> None:
    assert satisfies({"GPU": 2, "MEMORY": 8e9}, {"GPU": 1})
    assert satisfies({}, {})
    assert not satisfies({"GPU": 0.5}, {"GPU": 1})
    assert not satisfies({"CPU": 4}, {"GPU": 1})


def test_the_pool_places_chunks_on_the_least_loaded_eligible_worker() -> None:
    workers = pool("tcp://a", "tcp://b", GPU=1)
    assert workers.count({"GPU": 1}) == 2 and workers.count({"GPU": 2}) == 0
    first = workers.least_loaded({"GPU": 1})
    workers.placed(first)
    second = workers.least_loaded({"GPU": 1})
    assert {first, second} == {"tcp://a", "tcp://b"}
    assert workers.least_loaded({"GPU": 2}) is None
    workers.left(first)
    workers.left(first)  # never below zero
    assert workers.chunks_on(first or "") == 0
    assert workers.name("tcp://a") == "a" and workers.name("tcp://gone") == "tcp://gone"


def test_a_worker_is_idle_without_chunks_and_without_warm_ups() -> None:
    workers = pool("tcp://a", "tcp://b")
    workers.placed("tcp://a")
    assert not workers.is_idle("tcp://a") and workers.is_idle("tcp://b")
    workers.warming += 1
    assert not workers.is_idle("tcp://b")


def test_the_scaler_asks_the_cluster_for_the_sum_of_the_apis_wishes_once() -> None:
    async def scenario() -> None:
        one, two = ready_api("one"), ready_api("two")
        one.desired_workers, two.desired_workers = 2, 1
        cluster = Cluster(awaitable=True)
        scaler = ClusterScaler({"one": one, "two": two}, pool("tcp://a"), cluster, max_workers=5)
        await scaler._size_cluster()
        await scaler._size_cluster()  # workers take a while to come: not asked again
        assert cluster.calls == [("scale", 3)]
        assert scaler.events[-1]["to"] == 3 and scaler.events[-1]["reason"] == "scale up"

    asyncio.run(scenario())


def test_the_scaler_keeps_within_its_bounds() -> None:
    async def scenario() -> None:
        state = ready_api()
        state.desired_workers = 50
        cluster = Cluster()
        scaler = ClusterScaler({"api": state}, pool(), cluster, min_workers=1, max_workers=4)
        await scaler._size_cluster()
        assert cluster.calls == [("scale", 4)]

    asyncio.run(scenario())


def test_scaling_down_retires_only_idle_workers_by_name() -> None:
    async def scenario() -> None:
        state = ready_api()
        state.desired_workers = 1
        workers = pool("tcp://a", "tcp://b", "tcp://c")
        workers.placed("tcp://a")
        cluster = Cluster()
        scaler = ClusterScaler({"api": state}, workers, cluster)
        await scaler._size_cluster()
        assert cluster.calls == [("scale_down", ["b", "c"])]
        busy = ClusterScaler({"api": state}, pool("tcp://a"), Cluster())
        busy.workers.placed("tcp://a")
        state.desired_workers = 0
        await busy._size_cluster()
        assert busy.cluster.calls == []  # type: ignore[union-attr]  # nothing idle to retire

    asyncio.run(scenario())


def test_without_a_cluster_recommendations_are_only_published() -> None:
    async def scenario() -> None:
        state = ready_api(min_replicas=0, upscale_stabilization_period=0)
        state.desired_workers = 0
        state.queue.push(_queued("api"))
        scaler = ClusterScaler({"api": state}, pool(), None)
        await scaler.tick(now=1e9)
        assert state.desired_workers == 1  # work waits on zero replicas: one at once
        assert state.blocked is not None and "none can be added" in state.blocked
        assert state.public()["state"] == "waiting_for_resources"

    asyncio.run(scenario())


def test_a_cluster_whose_new_workers_offer_the_resources_is_not_blocked() -> None:
    async def scenario() -> None:
        state = ready_api(gpu=1, min_replicas=0)
        state.queue.push(_queued("api"))
        gpu_cluster = Cluster({"options": {"resources": {"GPU": 1}}})
        await ClusterScaler({"api": state}, pool(), gpu_cluster).tick(now=1e9)
        assert state.blocked is None
        cpu_cluster = Cluster()
        await ClusterScaler({"api": state}, pool(), cpu_cluster).tick(now=1e9)
        assert state.blocked is not None

    asyncio.run(scenario())


def _queued(api: str) -> Any:
    from .harness import new_workload

    return new_workload(api)
