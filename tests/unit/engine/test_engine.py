"""The whole engine on the fake backend: deploy, accept, finish, cancel, undeploy, recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from asyncnb.contract.status import APIPhase, Status
from asyncnb.engine import Conflict, NotFound, Unavailable
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.runtime.chunks import run_chunk, warm
from asyncnb.storage import Storage

from .harness import Echo, deploy, engine, memory_storage, new_workload, submit, until


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


class Doubler:
    def predict(self, payload: Any) -> Any:
        if payload.get("fail"):
            raise ValueError("asked to fail")
        return {"double": 2 * payload["n"]}


class BrokenInit:
    def __init__(self) -> None:
        raise RuntimeError("weights missing")

    def predict(self, payload: Any) -> Any:
        return payload


def real_backend(workers: int = 1) -> FakeBackend:
    """Chunks run the real worker runtime, on threads of this process."""
    return FakeBackend(workers, runner=run_chunk, warmer=warm)


def test_a_workload_runs_the_real_runtime_end_to_end() -> None:
    async def scenario() -> None:
        gateway = engine(real_backend())
        await gateway.start()
        state = await deploy(gateway, "double", Doubler)
        assert state.state is APIPhase.READY and state.version == 1
        workload = await submit(gateway, state, b'{"n": 21}')
        await gateway.wait(workload, 10)
        assert workload.status is Status.COMPLETED
        assert workload.inline_result() == {"double": 42}
        assert gateway.peek("double", workload.id) is workload
        assert state.counts == {"submitted": 1, "completed": 1, "failed": 0, "cancelled": 0}
        failing = await submit(gateway, state, b'{"fail": true}')
        await gateway.wait(failing, 10)
        assert failing.status is Status.FAILED and failing.error is not None
        assert failing.error["type"] == "ValueError"
        await gateway.close()

    run(scenario())


def test_a_predictor_that_cannot_be_built_leaves_the_api_in_error() -> None:
    async def scenario() -> None:
        gateway = engine(real_backend())
        await gateway.start()
        state = await deploy(gateway, "broken", BrokenInit)
        assert state.state is APIPhase.ERROR and state.error is not None
        assert state.error["type"] == "PredictorInitError"
        assert "weights missing" in state.error["message"]
        await gateway.close()

    run(scenario())


def test_redeploying_makes_a_new_version_and_keeps_the_secret() -> None:
    async def scenario() -> None:
        gateway = engine(FakeBackend())
        await gateway.start()
        first, secret = await gateway.deploy("api", b"class-v1", None, _options())
        again, same = await gateway.deploy("api", b"class-v2", {"k": 1}, _options())
        assert again is first and again.version == 2 and same == secret
        assert gateway.storage.exists(gateway.storage.predictor_path("api", 2))
        await gateway.close()

    run(scenario())


def test_a_finished_workload_is_read_back_from_storage_once_evicted() -> None:
    async def scenario() -> None:
        gateway = engine(real_backend(), finished_cache=1)
        await gateway.start()
        state = await deploy(gateway, "double", Doubler)
        first = await submit(gateway, state, b'{"n": 1}')
        await gateway.wait(first, 10)
        second = await submit(gateway, state, b'{"n": 2}')
        await gateway.wait(second, 10)
        assert gateway.peek("double", first.id) is None  # evicted from memory
        found = await gateway.get("double", first.id)
        assert found is not None and found.inline_result() == {"double": 2}
        assert await gateway.get("other", first.id) is None
        await gateway.close()

    run(scenario())


def test_recent_lists_newest_first_and_filters_by_status() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        gateway = engine(backend)
        await gateway.start()
        state = await deploy(gateway)
        workloads = [await submit(gateway, state) for _ in range(4)]
        for n, workload in enumerate(workloads):
            workload.created_at = 1000.0 + n
        await until(backend.pending)
        await gateway.cancel("api", workloads[0].id)
        listed = gateway.recent("api", None, 3)
        assert [w.id for w in listed] == [w.id for w in reversed(workloads)][:3]
        assert [w.id for w in gateway.recent("api", Status.CANCELLED, 10)] == [workloads[0].id]
        await gateway.close()

    run(scenario())


def test_cancelling_a_queued_workload_takes_it_out_of_the_queue() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=0)  # nothing runs: everything stays queued
        gateway = engine(backend)
        await gateway.start()
        state = await deploy(gateway)
        kept, cancelled = await submit(gateway, state), await submit(gateway, state)
        assert len(state.queue) == 2
        await gateway.cancel("api", cancelled.id)
        assert cancelled.status is Status.CANCELLED and len(state.queue) == 1
        with pytest.raises(Conflict):
            await gateway.cancel("api", cancelled.id)
        with pytest.raises(NotFound):
            await gateway.cancel("api", "f" * 32)
        backend.set_workers(1)
        await gateway.dispatcher.refresh_workers()
        gateway.dispatcher.wake()
        [task] = await until(backend.pending)
        assert task.ids == [kept.id]
        await gateway.close()

    run(scenario())


def test_a_running_chunk_is_cancelled_once_all_its_workloads_are() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        gateway = engine(backend)
        await gateway.start()
        state = await deploy(gateway)
        one, two = await submit(gateway, state), await submit(gateway, state)
        await asyncio.sleep(0)
        [task] = await until(backend.pending)
        assert sorted(task.ids) == sorted([one.id, two.id])
        task.start()
        await gateway.cancel("api", one.id)
        await asyncio.sleep(0.01)
        assert not task.cancelled  # `two` still wants its result
        await gateway.cancel("api", two.id)
        await until(lambda: task.cancelled)
        assert backend.cancelled == [task.key]
        await until(lambda: state.chunks_in_flight == 0)
        assert state.counts["cancelled"] == 2 and len(state.queue) == 0
        await gateway.close()

    run(scenario())


def test_undeploy_cancels_every_live_workload_and_forgets_the_api() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        gateway = engine(backend)
        await gateway.start()
        state = await deploy(gateway, max_concurrency=1)
        workloads = [await submit(gateway, state) for _ in range(3)]
        await until(backend.pending)
        await gateway.undeploy("api")
        assert all(w.status is Status.CANCELLED for w in workloads)
        assert "api" not in gateway.apis
        assert not gateway.storage.exists(gateway.storage.spec_path("api"))
        with pytest.raises(NotFound):
            gateway.api("api")
        await gateway.close()

    run(scenario())


def test_a_replayed_id_returns_the_first_workload() -> None:
    async def scenario() -> None:
        gateway = engine(FakeBackend(workers=0))
        await gateway.start()
        state = await deploy(gateway)
        workload_id = gateway.new_id("api", "order-17")
        assert workload_id == gateway.new_id("api", "order-17") != gateway.new_id("api", "x")
        assert gateway.claim(workload_id)
        assert not gateway.claim(workload_id)  # held while the first request is read
        replay = asyncio.ensure_future(gateway.replay("api", workload_id))
        first = new_workload("api", idempotency_key="order-17")
        first.id = workload_id
        accepted = await gateway.accept(state, first)
        assert await replay is accepted
        assert await gateway.replay("api", workload_id) is accepted
        await gateway.close()

    run(scenario())


def test_a_queue_entry_that_cannot_be_persisted_is_not_accepted() -> None:
    async def scenario() -> None:
        gateway = engine(FakeBackend(workers=0))
        await gateway.start()
        state = await deploy(gateway)

        def broken(workload: Any) -> None:
            raise OSError("disk full")

        gateway.store.accept = broken  # type: ignore[method-assign]
        with pytest.raises(Unavailable, match="storage is unavailable: disk full"):
            await submit(gateway, state)
        assert len(state.queue) == 0 and state.counts["submitted"] == 0
        await gateway.close()

    run(scenario())


@pytest.mark.parametrize("where", ["journal", "objects"])
def test_accepted_work_survives_a_restart_and_completes(where: str, tmp_path: Path) -> None:
    storage_url = str(tmp_path) if where == "journal" else memory_storage().url

    async def first_life() -> list[str]:
        gateway = engine(FakeBackend(workers=0), Storage(storage_url))
        await gateway.start()
        state = await deploy(gateway, "double", Doubler)
        ids = [(await submit(gateway, state, f'{{"n": {n}}}'.encode())).id for n in range(3)]
        await gateway.close()  # as good as a crash: nothing ran, nothing was finished
        return ids

    async def second_life(ids: list[str]) -> None:
        gateway = engine(real_backend(), Storage(storage_url))
        await gateway.start()
        state = gateway.api("double")
        assert state.counts["submitted"] == 3
        for workload_id in ids:
            workload = await gateway.get("double", workload_id)
            assert workload is not None
            await gateway.wait(workload, 10)
            assert workload.status is Status.COMPLETED
        results = [(await gateway.get("double", i)).inline_result() for i in ids]  # type: ignore[union-attr]
        assert results == [{"double": 0}, {"double": 2}, {"double": 4}]
        await gateway.close()

    ids = asyncio.run(first_life())
    asyncio.run(second_life(ids))


def test_expired_results_are_forgotten_and_swept() -> None:
    async def scenario() -> None:
        gateway = engine(real_backend())
        await gateway.start()
        state = await deploy(gateway, "double", Doubler, result_ttl=60)
        workload = await submit(gateway, state, b'{"n": 1}')
        await gateway.wait(workload, 10)
        workload.expires_at = time.time() - 1
        assert gateway.peek("double", workload.id) is None
        assert await gateway.get("double", workload.id) is None
        await gateway.sweep_expired()
        await gateway.close()

    run(scenario())


def test_an_owed_webhook_is_attempted_and_its_outcome_recorded() -> None:
    async def scenario() -> None:
        gateway = engine(real_backend(), webhook_attempts=1)
        await gateway.start()
        state = await deploy(gateway, "double", Doubler)
        # a refused port on loopback: the delivery fails at once
        workload = await submit(gateway, state, b'{"n": 1}', webhook_url="http://127.0.0.1:9/")
        await gateway.wait(workload, 10)
        assert workload.webhook is not None
        await until(lambda: workload.webhook and workload.webhook["status"] != "pending")
        assert workload.webhook["status"] == "failed" and workload.webhook["attempts"] == 1
        record = gateway.store.final_record("double", workload.id)
        assert record is not None and record["webhook"]["status"] == "failed"
        await gateway.close()

    run(scenario())


def test_metrics_count_what_the_engine_did() -> None:
    async def scenario() -> None:
        gateway = engine(real_backend())
        await gateway.start()
        state = await deploy(gateway, "echo", Echo)
        workload = await submit(gateway, state, b'"hi"')
        await gateway.wait(workload, 10)
        text = gateway.metrics.render().decode()
        assert 'asyncnb_workloads_completed_total{api="echo"} 1.0' in text
        assert 'asyncnb_chunk_workloads_count{api="echo"} 1.0' in text
        await gateway.close()

    run(scenario())


def _options(**values: Any) -> Any:
    from asyncnb.contract.options import APIOptions

    return APIOptions(**values)
