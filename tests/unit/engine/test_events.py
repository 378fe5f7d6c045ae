"""The event hub on the fake backend: numbering, order, resume, persistence and recovery."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncnb.contract.status import Status
from asyncnb.engine import events as events_module
from asyncnb.engine.backends.fake import FakeBackend, FakeTask
from asyncnb.engine.engine import Engine
from asyncnb.engine.event_store import EventStore
from asyncnb.engine.workload import WorkloadState

from .harness import asynctest, deploy, engine, failed_outcome, memory_storage, submit, until


async def collect(
    eng: Engine, workload: WorkloadState, after: int = 0, timeout: float = 5.0
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in eng.events.follow(workload, after, keepalive_s=0.05):
            if event is not None:
                found.append(event)

    await asyncio.wait_for(read(), timeout)
    return found


async def running(backend: FakeBackend) -> FakeTask:
    task: FakeTask = await until(lambda: backend.pending()[0] if backend.pending() else None)
    return task


@asynctest
async def test_a_run_makes_numbered_events_in_order_then_ends() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        reader = asyncio.ensure_future(collect(eng, workload))
        task.start()
        task.progress(0.5, "half")
        task.stream([{"index": 0, "value": 1, "encoding": "json"}])
        task.stream([{"type": "log", "line": "hello", "stream": "stdout"}])
        task.succeed(b"[1]")
        events = await reader
    finally:
        await eng.close()
    assert [e["type"] for e in events] == ["start", "progress", "output", "log", "completed"]
    assert [e["event_id"] for e in events] == [1, 2, 3, 4, 5]
    assert {e["attempt"] for e in events} == {1}
    assert events[2]["value"] == 1 and events[2]["index"] == 0
    assert events[3]["line"] == "hello" and events[3]["stream"] == "stdout"
    assert events[1]["fraction"] == 0.5 and events[1]["message"] == "half"
    terminal = events[-1]
    assert terminal["status"] == "completed" and terminal["result"] == [1]
    assert terminal["id"] == workload.id and terminal["timestamp"].endswith("Z")


@asynctest
async def test_resume_after_an_id_gives_the_rest_once() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        task.start()
        for n in range(5):
            task.stream([{"index": n, "value": n, "encoding": "json"}])
        task.succeed(b"[0,1,2,3,4]")
        await until(lambda: workload.status is Status.COMPLETED)
        everything = await collect(eng, workload)
        rest = await collect(eng, workload, after=3)
        await eng.events.flush()
        await until(lambda: workload.id not in eng.events.logs)
        replayed = await collect(eng, workload, after=3)  # now from storage
    finally:
        await eng.close()
    assert [e["event_id"] for e in everything] == list(range(1, 8))
    assert [e["event_id"] for e in rest] == [4, 5, 6, 7]
    assert replayed == rest


@asynctest
async def test_items_announce_a_run_whose_start_was_lost() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        task.stream([{"index": 0, "value": "a", "encoding": "text"}])  # its start was lost
        task.succeed(b'["a"]')
        events = await collect(eng, workload)
    finally:
        await eng.close()
    assert [e["type"] for e in events] == ["start", "output", "completed"]
    assert workload.attempts == 1


@asynctest
async def test_the_same_task_run_again_after_a_worker_died_is_a_new_attempt() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        task.start()
        task.stream([{"index": 0, "value": "a", "encoding": "text", "seq": 0}])
        task.start()  # Dask ran the task again elsewhere: its items count from 0 again
        task.stream([{"index": 0, "value": "a", "encoding": "text", "seq": 0}])
        task.succeed(b'["a"]')
        events = await collect(eng, workload)
    finally:
        await eng.close()
    assert [(e["type"], e["attempt"]) for e in events] == [
        ("start", 1),
        ("output", 1),
        ("start", 2),
        ("output", 2),
        ("completed", 2),
    ]


@asynctest
async def test_a_short_run_gets_a_start_before_its_end() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        (await running(backend)).succeed(b'"done"')
        events = await collect(eng, workload)
    finally:
        await eng.close()
    assert [(e["type"], e["attempt"]) for e in events] == [("start", 1), ("completed", 1)]


@asynctest
async def test_a_retried_workload_numbers_its_attempts_and_ignores_the_old_run() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng, max_retries=1, retry_backoff_s=0)
        workload = await submit(eng, state)
        first = await running(backend)
        first.start()
        first.stream([{"index": 0, "value": "x", "encoding": "text"}])
        first.publish([failed_outcome(workload.id)])  # predict raised: retried
        second = await until(
            lambda: next((t for t in backend.pending() if t.key != first.key), None)
        )
        first.stream([{"index": 1, "value": "stale", "encoding": "text"}])  # ignored
        second.start()
        second.stream([{"index": 0, "value": "x", "encoding": "text", "attempt": 2}])
        second.succeed(b'["x"]')
        events = await collect(eng, workload)
    finally:
        await eng.close()
    assert [(e["type"], e["attempt"]) for e in events] == [
        ("start", 1),
        ("output", 1),
        ("start", 2),
        ("output", 2),
        ("completed", 2),
    ]
    assert "stale" not in str(events)


@asynctest
async def test_a_slow_reader_reads_old_events_from_storage(monkeypatch: Any) -> None:
    monkeypatch.setattr(events_module, "WINDOW_EVENTS", 16)
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        task.start()
        for n in range(300):
            task.stream([{"index": n, "value": n, "encoding": "json"}])
            if n % 50 == 0:
                await eng.events.flush()
        await eng.events.flush()
        log = eng.events.logs[workload.id]
        assert len(log.window) <= 16  # memory stays bounded
        task.succeed(b"[]")
        events = await collect(eng, workload)
    finally:
        await eng.close()
    outputs = [e["value"] for e in events if e["type"] == "output"]
    assert outputs == list(range(300))
    assert [e["event_id"] for e in events] == list(range(1, 303))


@asynctest
async def test_a_restarted_gateway_numbers_after_the_stored_events() -> None:
    storage = memory_storage()
    backend = FakeBackend(1)
    eng = engine(backend, storage)
    await eng.start()
    state = await deploy(eng)
    workload = await submit(eng, state)
    task = await running(backend)
    task.start()
    task.stream([{"index": 0, "value": "a", "encoding": "text"}])
    await until(lambda: eng.events.logs[workload.id].next_id == 3)
    await eng.close()  # flushes: start, output

    backend2 = FakeBackend(1)
    eng2 = engine(backend2, storage)
    await eng2.start()
    try:
        recovered = await eng2.get(workload.api, workload.id)
        assert recovered is not None
        rerun = await running(backend2)
        rerun.start()
        rerun.stream([{"index": 0, "value": "a", "encoding": "text"}])
        rerun.succeed(b'["a"]')
        events = await collect(eng2, recovered)
    finally:
        await eng2.close()
    assert [(e["event_id"], e["type"], e["attempt"]) for e in events] == [
        (1, "start", 1),
        (2, "output", 1),
        (3, "start", 2),
        (4, "output", 2),
        (5, "completed", 2),
    ]
    assert recovered.attempts == 2


@asynctest
async def test_a_finished_workload_without_stored_events_replays_its_start_and_end() -> None:
    storage = memory_storage()
    backend = FakeBackend(1)
    eng = engine(backend, storage)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        (await running(backend)).succeed(b'"ok"')
        await until(lambda: workload.status is Status.COMPLETED)
        await eng.events.flush()
        await until(lambda: workload.id not in eng.events.logs)
        store = EventStore(storage)
        for start in store.segment_starts(workload.api, workload.id):
            storage.delete(storage.event_segment_path(workload.api, workload.id, start))
        events = await collect(eng, workload)
    finally:
        await eng.close()
    assert [(e["event_id"], e["type"]) for e in events] == [(1, "start"), (2, "completed")]
    assert events[1]["result"] == "ok"


@asynctest
async def test_event_store_skips_a_torn_line() -> None:
    storage = memory_storage()
    store = EventStore(storage)
    store.write("a", "w", [{"event_id": 1, "type": "start"}, {"event_id": 2, "type": "log"}])
    path = storage.event_segment_path("a", "w", 3)
    storage.write_bytes(path, b'{"event_id": 3, "type": "log"}\n{"event_id": 4, "ty')
    assert [e["event_id"] for e in store.read("a", "w")] == [1, 2, 3]
    assert [e["event_id"] for e in store.read("a", "w", after=2)] == [3]
    assert store.tail("a", "w") == (3, 0)


@asynctest
async def test_a_workload_that_emits_nothing_writes_no_events() -> None:
    storage = memory_storage()
    backend = FakeBackend(1)
    eng = engine(backend, storage)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        task.start()
        task.succeed(b'"ok"')
        await until(lambda: workload.status is Status.COMPLETED)
        await eng.events.flush()
        assert workload.id not in eng.events.logs
        assert EventStore(storage).segment_starts(workload.api, workload.id) == []
        events = await collect(eng, workload)
    finally:
        await eng.close()
    assert [(e["event_id"], e["type"], e["attempt"]) for e in events] == [
        (1, "start", 1),
        (2, "completed", 1),
    ]


@asynctest
async def test_a_reader_of_a_running_workload_gets_its_start_first() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    await eng.start()
    try:
        state = await deploy(eng)
        workload = await submit(eng, state)
        task = await running(backend)
        task.start()  # nobody needs a log yet
        await until(lambda: workload.status is Status.IN_PROGRESS)
        reader = asyncio.ensure_future(collect(eng, workload))
        await until(lambda: workload.id in eng.events.logs)
        task.stream([{"index": 0, "value": 1, "encoding": "json"}])
        task.succeed(b"[1]")
        events = await reader
    finally:
        await eng.close()
    assert [(e["event_id"], e["type"]) for e in events] == [
        (1, "start"),
        (2, "output"),
        (3, "completed"),
    ]
