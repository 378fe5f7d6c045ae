"""Dispatch policy on the fake backend: what runs where, in chunks of which size."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from asyncnb.contract.status import APIPhase, Status
from asyncnb.engine.backends.fake import FakeBackend

from .harness import dispatcher, new_workload, ok_outcome, ready_api, until


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


def queue(state: Any, count: int, **kw: Any) -> list[Any]:
    workloads = [new_workload(state.name, **kw) for _ in range(count)]
    for workload in workloads:
        state.queue.push(workload)
    return workloads


def test_a_short_queue_is_shared_among_all_slots() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=2)
        state = ready_api(max_concurrency=2)
        built, _ = dispatcher(backend, state, max_chunk=4, prefetch=1)
        await built.refresh_workers()
        assert state.workers == 2
        queue(state, 10)
        assert built.dispatch(state) == 4  # 2 workers x 2 slots, no backlog: no prefetch
        assert [len(t.items) for t in backend.chunks] == [3, 2, 2, 1]
        assert len(state.queue) == 2 and state.chunks_in_flight == 4
        assert len(state.running) == 8

    run(scenario())


def test_a_backlog_fills_every_slot_and_prefetches_one_more_chunk_each() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=2)
        state = ready_api(max_concurrency=2)
        built, _ = dispatcher(backend, state, max_chunk=4, prefetch=1)
        await built.refresh_workers()
        queue(state, 64)  # >= slots x max_chunk: a backlog
        assert built.dispatch(state) == 8
        assert [len(t.items) for t in backend.chunks] == [4] * 8
        assert built.dispatch(state) == 0  # every slot and its prefetch are taken

    run(scenario())


def test_without_prefetch_only_the_slots_get_chunks() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api(max_concurrency=3)
        built, _ = dispatcher(backend, state, max_chunk=2, prefetch=0)
        await built.refresh_workers()
        queue(state, 30)
        assert built.dispatch(state) == 3
        assert [len(t.items) for t in backend.chunks] == [2, 2, 2]

    run(scenario())


def test_chunks_spread_over_the_least_loaded_workers() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=3)
        state = ready_api(max_concurrency=2)
        built, _ = dispatcher(backend, state, max_chunk=64)
        await built.refresh_workers()
        queue(state, 6)
        built.dispatch(state)
        placed = [t.worker for t in backend.chunks]
        assert sorted(placed) == sorted(list(backend.worker_info) * 2)
        assert all(built.workers.chunks_on(address) == 2 for address in backend.worker_info)

    run(scenario())


def test_higher_priorities_go_first_then_first_come_first_served() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished = dispatcher(backend, state, max_chunk=1, prefetch=0)
        await built.refresh_workers()
        low = queue(state, 2)
        high = queue(state, 1, priority=5)
        mid = queue(state, 1, priority=1)
        built.dispatch(state)
        assert backend.chunks[0].ids == [high[0].id]
        for expected in [mid[0], *low]:
            done = backend.chunks[-1]
            done.finish([ok_outcome(i) for i in done.ids])
            await until(lambda: state.chunks_in_flight == 0)
            built.dispatch(state)
            assert backend.chunks[-1].ids == [expected.id]
        assert list(finished.statuses()) == [high[0].id, mid[0].id, low[0].id]

    run(scenario())


def test_batched_apis_get_chunks_of_whole_batches() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api(max_concurrency=3, max_batch_size=4)
        built, _ = dispatcher(backend, state, max_chunk=64)
        await built.refresh_workers()
        queue(state, 9)
        built.dispatch(state)
        assert [len(t.items) for t in backend.chunks] == [4, 4, 1]

    run(scenario())


def test_batch_wait_holds_a_partial_batch_back_until_it_is_over() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api(max_batch_size=8, batch_wait_ms=50)
        built, _ = dispatcher(backend, state)
        await built.refresh_workers()
        queue(state, 3)
        assert built.dispatch(state) == 0  # waits for company
        await asyncio.sleep(0.06)
        assert built.dispatch(state) == 1
        assert len(backend.chunks[0].items) == 3

    run(scenario())


def test_only_workers_offering_the_resources_count_and_get_chunks() -> None:
    async def scenario() -> None:
        backend = FakeBackend({"tcp://cpu": {}, "tcp://gpu": {"GPU": 1}})
        gpu = ready_api("gpu", gpu=1, max_concurrency=4)
        cpu = ready_api("cpu")
        built, _ = dispatcher(backend, gpu, cpu)
        await built.refresh_workers()
        assert (gpu.workers, cpu.workers) == (1, 2)
        queue(gpu, 2)
        built.dispatch(gpu)
        assert {t.worker for t in backend.chunks} == {"tcp://gpu"}
        assert backend.chunks[0].resources == {"GPU": 1}

    run(scenario())


def test_nothing_is_dispatched_to_workers_that_cannot_be_seen() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=2)
        state = ready_api()
        built, _ = dispatcher(backend, state)
        await built.refresh_workers()
        backend.reachable = False
        await built.refresh_workers()
        assert state.workers == 0 and built.workers.addresses() == []
        queue(state, 3)
        assert built.dispatch(state) == 0 and not backend.chunks

    run(scenario())


def test_an_api_that_is_not_ready_gets_nothing() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        state.state = APIPhase.DEPLOYING
        built, _ = dispatcher(backend, state)
        await built.refresh_workers()
        queue(state, 2)
        assert built.dispatch(state) == 0

    run(scenario())


def test_a_submit_the_cluster_refuses_puts_the_chunk_back() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, _ = dispatcher(backend, state)
        await built.refresh_workers()
        queue(state, 2)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OSError("scheduler closed the stream")

        backend.submit_chunk = refuse  # type: ignore[method-assign]
        assert built.dispatch(state) == 0
        assert len(state.queue) == 2 and state.chunks_in_flight == 0

    run(scenario())


def test_start_and_progress_events_update_their_workloads() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, _ = dispatcher(backend, state)
        await built.start()
        [workload] = queue(state, 1)
        built.dispatch(state)
        task = backend.chunks[0]
        assert workload.status is Status.IN_QUEUE and workload.chunk_key == task.key
        task.start(t=workload.created_at + 2)
        assert workload.status is Status.IN_PROGRESS and workload.attempts == 1
        assert workload.started_at == workload.created_at + 2
        task.progress(0.5, "halfway")
        assert workload.progress == {"fraction": 0.5, "message": "halfway"}
        # a start event of some other task (a stale re-run) changes nothing
        backend.emit({"kind": "start", "api": "api", "ids": [workload.id], "key": "x", "t": 0})
        assert workload.attempts == 1
        await built.close()

    run(scenario())


def test_deploy_warm_up_makes_the_api_ready_or_error() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        good, bad = ready_api("good"), ready_api("bad")
        for state in (good, bad):
            state.state = APIPhase.DEPLOYING
        error = {"type": "PredictorInitError", "message": "no weights", "traceback": ""}
        backend.warmer = lambda spec: (
            {"ok": True} if spec["api"] == "good" else {"ok": False, "error": error}
        )
        built, _ = dispatcher(backend, good, bad)
        built.warm(good)
        built.warm(bad)
        await until(lambda: good.state is APIPhase.READY and bad.state is APIPhase.ERROR)
        assert bad.error == error
        assert [t.spec["api"] for t in backend.warmups] == ["good", "bad"]
        assert built.workers.warming == 0

    run(scenario())


def test_the_spec_tells_workers_what_they_need_of_the_api() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api(max_batch_size=4, max_concurrency=2, timeout_s=9)
        built, _ = dispatcher(backend, state, inline_result_bytes=123)
        spec = built.spec(state)
        assert spec["api"] == "api" and spec["version"] == 1
        assert (spec["max_batch_size"], spec["max_concurrency"], spec["timeout_s"]) == (4, 2, 9)
        assert spec["inline_limit"] == 123 and spec["outcomes_by_event"] is True
        assert spec["storage"]["url"].startswith("memory://")

    run(scenario())
