"""What a chunk's end means for its workloads: results, retries, requeues, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from asyncnb.contract.status import APIPhase, Status
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.engine.outcomes import retry_delay

from .harness import dispatcher, failed_outcome, new_workload, ok_outcome, ready_api, until


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


def recorded_delays() -> list[float]:
    """Retry backoffs as they are scheduled; each fires at once, so no test waits them out."""
    loop = asyncio.get_running_loop()
    original = loop.call_later
    delays: list[float] = []

    def call_later(delay: float, callback: Callable[..., Any], *args: Any) -> Any:
        if "retry_later" not in getattr(callback, "__qualname__", ""):
            return original(delay, callback, *args)  # asyncio.sleep, say
        delays.append(delay)
        return original(0, callback, *args)

    loop.call_later = call_later  # type: ignore[method-assign]
    return delays


async def started(backend: FakeBackend, state: Any, count: int = 1, **settings: Any) -> Any:
    built, finished = dispatcher(backend, state, **settings)
    await built.start()
    workloads = [new_workload(state.name) for _ in range(count)]
    for workload in workloads:
        state.queue.push(workload)
    built.wake()
    await until(lambda: backend.pending())
    return built, finished, workloads


def test_outcomes_by_event_need_no_fetch_and_complete_the_workloads() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, workloads = await started(backend, state, 3)
        [task] = backend.pending()
        task.start()
        task.succeed(b'{"x": 1}')
        await until(lambda: len(finished.endings) == 3)
        assert set(finished.statuses().values()) == {Status.COMPLETED}
        assert all(w.result_data == b'{"x": 1}' and w.attempts == 1 for w in workloads)
        assert backend.fetched == [] and backend.released == [task.key]
        assert state.chunks_in_flight == 0 and not built.workers.chunks_on(task.worker or "")
        await built.close()

    run(scenario())


def test_large_outcomes_are_fetched_as_the_tasks_result() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, [workload] = await started(backend, state)
        [task] = backend.pending()
        stored = ok_outcome(workload.id)
        del stored["data"]
        stored["stored"] = True
        task.finish([stored])
        await until(lambda: finished.endings)
        assert backend.fetched == [task.key]
        assert workload.result_stored and workload.result_data is None
        # never announced as started: the run still counts as an attempt
        assert workload.attempts == 1
        await built.close()

    run(scenario())


def test_a_failing_workload_is_retried_with_doubling_backoff_then_fails() -> None:
    async def scenario() -> None:
        delays = recorded_delays()
        backend = FakeBackend(workers=1)
        state = ready_api(max_retries=2, retry_backoff_s=0.5)
        built, finished, [workload] = await started(backend, state)
        for attempt in range(3):
            task = (await until(backend.pending))[0]
            assert task.ids == [workload.id]
            task.start()
            task.publish([failed_outcome(workload.id, f"attempt {attempt + 1}")])
            if attempt < 2:
                await until(lambda n=attempt: len(delays) == n + 1)
        await until(lambda: finished.endings)
        assert delays == [0.5, 1.0]
        assert len(backend.chunks) == 3 and workload.attempts == 3
        [(_, status, error)] = finished.endings
        assert status is Status.FAILED and error is not None
        assert error["message"] == "attempt 3"
        await built.close()

    run(scenario())


def test_a_workload_waiting_out_its_backoff_is_neither_queued_nor_running() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api(max_retries=1, retry_backoff_s=3600)
        built, _, [workload] = await started(backend, state)
        backend.pending()[0].publish([failed_outcome(workload.id)])
        await until(lambda: workload.retry_at is not None)
        assert workload.status is Status.IN_QUEUE and not workload.queued
        assert workload.id not in state.running and len(state.queue) == 0
        await built.close()

    run(scenario())


def test_retry_backoff_doubles_from_the_first_delay_up_to_an_hour() -> None:
    assert [retry_delay(1.5, attempts) for attempts in (1, 2, 3, 4)] == [1.5, 3.0, 6.0, 12.0]
    assert retry_delay(0, 5) == 0
    assert retry_delay(3600, 10) == retry_delay(1, 40) == 3600.0


def test_a_chunk_the_cluster_dropped_runs_again() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, workloads = await started(backend, state, 2)
        [first] = backend.pending()
        first.start()
        first.drop()  # a lost connection to the scheduler
        second = (await until(lambda: [t for t in backend.pending() if t is not first]))[0]
        assert sorted(second.ids) == sorted(w.id for w in workloads)
        assert all(w.status is Status.IN_QUEUE for w in workloads)
        second.succeed()
        await until(lambda: len(finished.endings) == 2)
        assert all(w.attempts == 2 for w in workloads)  # both runs were announced or counted
        await built.close()

    run(scenario())


def test_a_chunk_that_killed_its_workers_fails_with_worker_lost() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, _ = await started(backend, state)
        backend.pending()[0].fail(RuntimeError("worker died"), workers_lost=True)
        await until(lambda: finished.endings)
        [(_, status, error)] = finished.endings
        assert status is Status.FAILED and error is not None
        assert error["type"] == "WorkerLost" and "worker died" in error["message"]
        await built.close()

    run(scenario())


def test_a_task_that_raised_fails_its_workloads_with_the_exception() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, _ = await started(backend, state, 2)
        backend.pending()[0].fail(MemoryError("out of memory while unpickling"))
        await until(lambda: len(finished.endings) == 2)
        assert {e["type"] for _, _, e in finished.endings if e} == {"MemoryError"}
        await built.close()

    run(scenario())


def test_a_task_that_ended_without_its_outcomes_runs_again() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, _, [workload] = await started(backend, state)
        first = backend.pending()[0]
        first.finish(None)  # returned None, but its outcomes event never came
        await until(lambda: len(backend.chunks) == 2)
        assert backend.chunks[1].ids == [workload.id]
        await built.close()

    run(scenario())


def test_outcomes_that_cannot_be_persisted_requeue_their_workloads() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, [workload] = await started(backend, state)
        finished.fail = True
        backend.pending()[0].succeed()
        await until(lambda: len(backend.chunks) == 2)  # queued again, and dispatched again
        finished.fail = False
        backend.chunks[1].succeed()
        await until(lambda: finished.endings)
        assert finished.statuses() == {workload.id: Status.COMPLETED}
        await built.close()

    run(scenario())


def test_a_predictor_that_cannot_be_built_puts_the_api_in_error_and_keeps_its_work() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, workloads = await started(backend, state, 2)
        task = backend.pending()[0]
        task.publish([failed_outcome(w.id, "no weights", init_failed=True) for w in workloads])
        await until(lambda: state.state is APIPhase.ERROR)
        assert state.error is not None and state.error["message"] == "no weights"
        assert len(state.queue) == 2 and not finished.endings  # kept, for a redeploy
        await built.close()

    run(scenario())


def test_a_new_scheduler_requeues_the_chunks_of_the_old_one_and_warms_again() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished, [workload] = await started(backend, state)
        old = backend.pending()[0]
        old.start()
        backend.replace_scheduler()
        await built.refresh_workers()
        # the old task never ends; its workload runs again on the new scheduler
        new = (await until(lambda: [t for t in backend.pending() if t is not old]))[0]
        assert new.ids == [workload.id] and not old.ended
        assert len(backend.warmups) == 1
        new.succeed()
        await until(lambda: finished.endings)
        await built.close()

    run(scenario())
