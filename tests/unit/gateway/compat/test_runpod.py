"""RunPod's serverless contract over a real engine in this process (gateway/compat/runpod.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx

from asyncnb.contract.predictor import JSON_TYPE as JSON
from asyncnb.contract.status import Status
from asyncnb.engine.workload import WorkloadState
from asyncnb.gateway.compat.runpod_stream import Chunks, Cursor, StreamCursors, next_chunks

from ..test_app import ADMIN, GATE, USER, Doubler, Failing, Gated, deploy, gateway, until

BASE = "/compat/runpod/v2"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class Oversleeps:
    def predict(self, payload: Any) -> Any:
        time.sleep(0.5)
        return payload


async def final(
    client: httpx.AsyncClient, api: str, job_id: str, headers: dict[str, str] = USER
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        answer = await client.get(f"{BASE}/{api}/status/{job_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["status"] in FINAL else None

    result: dict[str, Any] = await until(probe)
    return result


async def run(client: httpx.AsyncClient, api: str, payload: Any, **fields: Any) -> str:
    answer = await client.post(f"{BASE}/{api}/run", json={"input": payload, **fields}, headers=USER)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"id", "status"} and answer.json()["status"] == "IN_QUEUE"
    job_id: str = answer.json()["id"]
    return job_id


def test_run_then_status_answers_runpods_shape() -> None:
    asyncio.run(_test_run_then_status_answers_runpods_shape())


async def _test_run_then_status_answers_runpods_shape() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        job_id = await run(client, "double", {"n": 21})
        body = await final(client, "double", job_id)
        assert body["id"] == job_id and body["status"] == "COMPLETED"
        assert body["output"] == {"double": 42}
        assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
        assert set(body) == {"id", "status", "output", "delayTime", "executionTime"}
        posted = await client.post(f"{BASE}/double/status/{job_id}", headers=USER)
        assert posted.status_code == 200 and posted.json() == body
        native = (await client.get(f"/double/{job_id}", headers=USER)).json()
        assert native["result"] == {"double": 42}  # one workload, seen by both contracts


def test_runsync_waits_and_answers_the_output() -> None:
    asyncio.run(_test_runsync_waits_and_answers_the_output())


async def _test_runsync_waits_and_answers_the_output() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        answer = await client.post(f"{BASE}/double/runsync", json={"input": {"n": 4}}, headers=USER)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "COMPLETED" and answer.json()["output"] == {"double": 8}
        GATE.clear()
        await deploy(client, "gated", Gated)
        waited = await client.post(
            f"{BASE}/gated/runsync?wait=50", json={"input": {"x": 1}}, headers=USER
        )
        assert waited.status_code == 200 and waited.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
        assert "output" not in waited.json()
        GATE.set()
        done = await final(client, "gated", waited.json()["id"])
        assert done["output"] == {"x": 1}


def test_failed_and_timed_out_carry_their_error() -> None:
    asyncio.run(_test_failed_and_timed_out_carry_their_error())


async def _test_failed_and_timed_out_carry_their_error() -> None:
    async with gateway() as client:
        await deploy(client, "fails", Failing)
        failed = await final(client, "fails", await run(client, "fails", {}))
        assert failed["status"] == "FAILED" and "output" not in failed
        assert failed["error"] == "ZeroDivisionError: no luck"
        await deploy(client, "slow", Oversleeps, timeout_s=0.05)
        timed_out = await final(client, "slow", await run(client, "slow", {}))
        native = (await client.get(f"/slow/{timed_out['id']}", headers=USER)).json()
        assert timed_out["status"] == "TIMED_OUT", (timed_out.get("error"), native.get("error"))
        assert timed_out["error"].startswith("Timeout: ")


def test_cancel_purge_queue_and_health() -> None:
    asyncio.run(_test_cancel_purge_queue_and_health())


async def _test_cancel_purge_queue_and_health() -> None:
    # The in-process backend announces no start: every unfinished job here reads IN_QUEUE
    # (tests/system/test_compat_runpod.py purges around a job in progress).
    async with gateway() as client:
        GATE.clear()
        await deploy(client, "gated", Gated)
        jobs = [await run(client, "gated", {"n": n}) for n in range(4)]
        health = (await client.get(f"{BASE}/gated/health", headers=USER)).json()
        assert health["jobs"] == {
            "completed": 0, "failed": 0, "inProgress": 0, "inQueue": 4, "retried": 0
        }  # fmt: skip
        assert set(health["workers"]) == {"idle", "running"}
        cancelled = await client.post(f"{BASE}/gated/cancel/{jobs[0]}", headers=USER)
        assert cancelled.status_code == 200
        assert cancelled.json() == {"id": jobs[0], "status": "CANCELLED"}
        assert (await final(client, "gated", jobs[0]))["status"] == "CANCELLED"
        purged = await client.post(f"{BASE}/gated/purge-queue", headers=USER)
        assert purged.status_code == 200 and purged.json() == {"removed": 3, "status": "completed"}
        for job_id in jobs[1:]:
            assert (await final(client, "gated", job_id))["status"] == "CANCELLED"
        again = await client.post(f"{BASE}/gated/purge-queue", headers=USER)
        assert again.json() == {"removed": 0, "status": "completed"}
        GATE.set()
        await deploy(client, "double", Doubler)
        done = await client.post(f"{BASE}/double/runsync", json={"input": {"n": 1}}, headers=USER)
        assert done.json()["status"] == "COMPLETED"
        late = await client.post(f"{BASE}/double/cancel/{done.json()['id']}", headers=USER)
        assert late.status_code == 200 and late.json()["status"] == "COMPLETED"
        health = (await client.get(f"{BASE}/double/health", headers=USER)).json()
        assert health["jobs"]["completed"] == 1 and health["jobs"]["inQueue"] == 0


async def streamed(client: httpx.AsyncClient, api: str, job_id: str) -> tuple[list[Any], str]:
    outputs: list[Any] = []

    async def probe() -> str | None:
        answer = await client.get(f"{BASE}/{api}/stream/{job_id}", headers=USER)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"status", "stream"}
        outputs.extend(chunk["output"] for chunk in body["stream"])
        return str(body["status"]) if body["status"] in FINAL else None

    status: str = await until(probe)
    return outputs, status


def test_stream_of_a_job_that_returns_gives_its_result_once() -> None:
    asyncio.run(_test_stream_of_a_job_that_returns_gives_its_result_once())


async def _test_stream_of_a_job_that_returns_gives_its_result_once() -> None:
    # The in-process backend sends no output events (the system test streams for real): a
    # job's result is then its one chunk, however it was made.
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        single = await run(client, "double", {"n": 2})
        assert await streamed(client, "double", single) == ([{"double": 4}], "COMPLETED")
        after = (await client.post(f"{BASE}/double/stream/{single}", headers=USER)).json()
        assert after == {"status": "COMPLETED", "stream": []}
        await deploy(client, "fails", Failing)
        failed = await run(client, "fails", {})
        assert await streamed(client, "fails", failed) == ([], "FAILED")


class ScriptedEvents:
    """`engine.events` with a fixed history, read from `after` as the EventHub's is."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    async def history(self, workload: Any, after: int, limit: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_id"] > after][:limit]


def test_stream_chunks_are_the_output_events_each_once() -> None:
    asyncio.run(_test_stream_chunks_are_the_output_events_each_once())


async def _test_stream_chunks_are_the_output_events_each_once() -> None:
    workload = WorkloadState("0" * 32, "count", created_at=0.0, content_type=JSON)
    log = ScriptedEvents([{"event_id": 1, "type": "start"}])
    engine: Any = SimpleNamespace(events=log)
    cursor = Cursor()

    async def result() -> Any:
        raise AssertionError("a job with outputs has no result chunk")

    assert await next_chunks(engine, workload, cursor, result) == Chunks([], False)
    log.events += [
        {"event_id": 2, "type": "output", "value": {"index": 0}},
        {"event_id": 3, "type": "log", "line": "x"},
        {"event_id": 4, "type": "output", "value": "text", "encoding": "text"},
    ]
    assert await next_chunks(engine, workload, cursor, result) == Chunks(
        [{"index": 0}, "text"], False
    )
    assert await next_chunks(engine, workload, cursor, result) == Chunks([], False)
    log.events += [
        {"event_id": 5, "type": "output", "truncated": True, "size": 70000},
        {"event_id": 6, "type": "completed"},
    ]
    workload.status = Status.COMPLETED
    assert await next_chunks(engine, workload, cursor, result) == Chunks(
        [{"truncated": True, "size": 70000}], True
    )
    assert await next_chunks(engine, workload, cursor, result) == Chunks([], True)
    assert cursor.outputs == 3 and cursor.after == 6


def test_stream_cursors_keep_the_newest() -> None:
    cursors = StreamCursors(capacity=2)
    cursors.of("a").after = 5
    cursors.of("b")
    cursors.of("a")  # used again: the newest
    cursors.of("c")
    assert len(cursors) == 2 and cursors.of("a").after == 5 and cursors.of("b").after == 0


def test_webhook_and_policy_map_to_asyncnbs_or_are_refused() -> None:
    asyncio.run(_test_webhook_and_policy_map_to_asyncnbs_or_are_refused())


async def _test_webhook_and_policy_map_to_asyncnbs_or_are_refused() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "bounded", Doubler, timeout_s=30)
        job_id = await run(
            client,
            "double",
            {"n": 1},
            webhook="http://127.0.0.1:9/hook",
            policy={"lowPriority": True},
        )
        native = (await client.get(f"/double/{job_id}", headers=USER)).json()
        assert native["priority"] == -1
        assert await final(client, "double", job_id)
        native = (await client.get(f"/double/{job_id}", headers=USER)).json()
        assert native["webhook"]["url"] == "http://127.0.0.1:9/hook"
        await run(client, "bounded", {"n": 1}, policy={"executionTimeout": 30_000})
        refused = [
            ("double", {"input": {}, "webhook": "ftp://example.com/hook"}, "http or https"),
            ("double", {"input": {}, "webhook": "http://169.254.169.254/x"}, "denied"),
            ("double", {"input": {}, "webhook": 7}, "webhook"),
            ("double", {"input": {}, "policy": {"ttl": 1000}}, "policy.ttl"),
            ("double", {"input": {}, "policy": {"executionTimeout": 1000}}, "timeout_s"),
            ("bounded", {"input": {}, "policy": {"executionTimeout": 1000}}, "timeout_s"),
            ("double", {"input": {}, "policy": {"executionTimeout": -1}}, "ms"),
            ("double", {"input": {}, "policy": {"lowPriority": "yes"}}, "lowPriority"),
            ("double", {"input": {}, "policy": {"speed": 1}}, "speed"),
            ("double", {"input": {}, "policy": []}, "policy"),
            ("double", {"input": {}, "s3Config": {}}, "s3Config"),
        ]
        for api, body, said in refused:
            answer = await client.post(f"{BASE}/{api}/run", json=body, headers=USER)
            assert answer.status_code == 422, (body, answer.text)
            assert said in answer.json()["detail"], (body, answer.text)


def test_bad_input_gets_clear_4xx() -> None:
    asyncio.run(_test_bad_input_gets_clear_4xx())


async def _test_bad_input_gets_clear_4xx() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        job_id = await run(client, "double", {"n": 1})
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("POST", f"{BASE}/double/run", {"json": {"n": 1}}, 400, "input"),
            ("POST", f"{BASE}/double/runsync", {"json": {}}, 400, "input"),
            ("POST", f"{BASE}/double/run", {"content": b"{nope"}, 400, "JSON"),
            ("POST", f"{BASE}/double/run", {"json": [1]}, 400, "object"),
            ("POST", f"{BASE}/missing/run", {"json": {"input": 1}}, 404, "missing"),
            ("GET", f"{BASE}/missing/health", {}, 404, "missing"),
            ("GET", f"{BASE}/missing/status/{job_id}", {}, 404, "missing"),
            ("GET", f"{BASE}/double/status/nope", {}, 400, ""),
            ("GET", f"{BASE}/double/stream/nope", {}, 400, ""),
            ("POST", f"{BASE}/double/cancel/nope", {}, 400, ""),
            ("GET", f"{BASE}/double/status/{'0' * 32}", {}, 404, "not found"),
            ("POST", f"{BASE}/double/runsync?wait=0", {"json": {"input": 1}}, 422, "wait"),
            ("POST", f"{BASE}/double/runsync?wait=soon", {"json": {"input": 1}}, 422, ""),
        ]
        for method, url, kwargs, code, said in cases:
            answer = await client.request(method, url, headers=USER, **kwargs)
            assert answer.status_code == code, (url, answer.text)
            assert said in str(answer.json()["detail"]), (url, answer.text)


async def create_key(client: httpx.AsyncClient, **fields: Any) -> str:
    answer = await client.post("/keys", json=fields, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def test_credentials_in_runpods_header_style_with_asyncnbs_scopes() -> None:
    asyncio.run(_test_credentials_in_runpods_header_style_with_asyncnbs_scopes())


async def _test_credentials_in_runpods_header_style_with_asyncnbs_scopes() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "other", Doubler)
        body = {"input": {"n": 1}}
        for headers, code in [
            ({}, 401),
            ({"Authorization": "wrong"}, 403),
            ({"Authorization": "Bearer wrong"}, 403),
            ({"Authorization": "Basic dXNyOg=="}, 401),
            ({"Authorization": f"ank_{'0' * 16}_{'x' * 43}"}, 401),
        ]:
            answer = await client.post(f"{BASE}/double/run", headers=headers, json=body)
            assert answer.status_code == code, (headers, answer.text)
            assert "detail" in answer.json()
        bare = await client.post(f"{BASE}/double/run", headers={"Authorization": "usr"}, json=body)
        assert bare.status_code == 200, bare.text
        invoker = await create_key(client, name="ivy", apis=["double"], scopes=["invoke"])
        reader = await create_key(client, name="rae", apis=["double"], scopes=["read"])
        as_ivy = {"Authorization": invoker}  # RunPod's bare style
        as_rae = {"Authorization": f"Bearer {reader}"}
        mine = (await client.post(f"{BASE}/double/run", headers=as_ivy, json=body)).json()["id"]
        assert (await final(client, "double", mine, as_ivy))["output"] == {"double": 2}
        owners = bare.json()["id"]
        foreign = await client.get(f"{BASE}/double/status/{owners}", headers=as_ivy)
        assert foreign.status_code == 403
        for path in (f"stream/{mine}", f"cancel/{mine}"):
            answer = await client.post(f"{BASE}/double/{path}", headers=as_rae)
            assert answer.status_code == 403, (path, answer.text)
        seen = (await client.get(f"{BASE}/double/status/{mine}", headers=as_rae)).json()
        assert seen["status"] == "COMPLETED" and "output" not in seen
        assert (await client.get(f"{BASE}/double/health", headers=as_rae)).status_code == 200
        assert (await client.get(f"{BASE}/double/health", headers=as_ivy)).status_code == 403
        assert (
            await client.post(f"{BASE}/double/run", headers=as_rae, json=body)
        ).status_code == 403
        assert (
            await client.post(f"{BASE}/other/run", headers=as_ivy, json=body)
        ).status_code == 403
        assert (await client.post(f"{BASE}/double/purge-queue", headers=as_rae)).status_code == 403


def test_a_key_purges_only_its_own_queued_jobs() -> None:
    asyncio.run(_test_a_key_purges_only_its_own_queued_jobs())


async def _test_a_key_purges_only_its_own_queued_jobs() -> None:
    async with gateway() as client:
        GATE.clear()
        await deploy(client, "gated", Gated)
        key = {"Authorization": await create_key(client, name="kit", apis=["gated"])}
        first = await run(client, "gated", {"n": 0})
        owners = [await run(client, "gated", {"n": n}) for n in (1, 2)]
        answer = await client.post(f"{BASE}/gated/run", json={"input": {"n": 3}}, headers=key)
        keys = answer.json()["id"]
        purged = await client.post(f"{BASE}/gated/purge-queue", headers=key)
        assert purged.json() == {"removed": 1, "status": "completed"}
        assert (await final(client, "gated", keys, key))["status"] == "CANCELLED"
        for job_id in [first, *owners]:
            answer = await client.get(f"{BASE}/gated/status/{job_id}", headers=USER)
            assert answer.json()["status"] == "IN_QUEUE"
        GATE.set()
        for job_id in [first, *owners]:
            assert (await final(client, "gated", job_id))["status"] == "COMPLETED"


def test_an_api_can_leave_the_contract_out() -> None:
    asyncio.run(_test_an_api_can_leave_the_contract_out())


async def _test_an_api_can_leave_the_contract_out() -> None:
    async with gateway() as client:
        await deploy(client, "native", Doubler, compat=["cortex"])
        answer = await client.post(f"{BASE}/native/run", json={"input": 1}, headers=USER)
        assert answer.status_code == 404 and "runpod" in answer.json()["detail"]
    async with gateway(compat=("cortex",)) as client:
        await deploy(client, "double", Doubler)
        answer = await client.post(f"{BASE}/double/run", json={"input": 1}, headers=USER)
        assert answer.status_code == 404


def test_a_body_past_the_limit_is_413() -> None:
    asyncio.run(_test_a_body_past_the_limit_is_413())


async def _test_a_body_past_the_limit_is_413() -> None:
    async with gateway() as client:
        await deploy(client, "small", Doubler, max_payload_bytes=1000)
        big = {"input": {"n": 1, "pad": "x" * 2000}}
        answer = await client.post(f"{BASE}/small/run", json=big, headers=USER)
        assert answer.status_code == 413 and "1000 bytes" in answer.json()["detail"]
        chunked = await client.post(
            f"{BASE}/small/run", content=_chunks(b'{"input": "' + b"x" * 2000 + b'"}'), headers=USER
        )
        assert chunked.status_code == 413


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 500):
        yield data[start : start + 500]
