"""`GET /{api}/{id}/events` and `/logs` in this process (a real engine on the fake backend,
driven by the test): the SSE format, resuming, the JSON form, errors and who may read them.
Live streaming over a socket is tested with real processes (tests/system/test_streaming.py):
httpx's ASGI transport hands over a body only once it is complete."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx

from asyncnb.contract.settings import GatewaySettings
from asyncnb.engine import Engine, EngineSettings
from asyncnb.engine.backends.fake import FakeBackend, FakeTask
from asyncnb.gateway.app import create_asgi_app
from asyncnb.storage import Storage
from tests.unit.gateway.test_app import ADMIN, USER, Doubler, assert_error, deploy


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Driven:
    def __init__(self, client: httpx.AsyncClient, backend: FakeBackend) -> None:
        self.client = client
        self.backend = backend

    async def task(self) -> FakeTask:
        for _ in range(2000):
            pending = self.backend.pending()
            if pending:
                return pending[0]
            await asyncio.sleep(0.005)
        raise AssertionError("no chunk was handed to the backend")


@asynccontextmanager
async def driven_gateway() -> AsyncIterator[Driven]:
    storage = Storage(f"memory://events-{uuid.uuid4().hex}")
    backend = FakeBackend(workers=1)
    engine = Engine(storage, backend, EngineSettings())
    await engine.start()
    app = create_asgi_app(GatewaySettings(storage=storage.url, token="usr", admin_token="adm"))
    app.state.engine = engine
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Driven(client, backend)
    finally:
        await engine.close()
        await backend.close()


def parse_sse(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(the events as {id, event, data}, the comment lines)."""
    events, comments = [], []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line)
            elif ": " in line:
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
        if "data" in fields:
            events.append(fields)
    return events, comments


async def finished_workload(gw: Driven) -> str:
    """A workload with a start, two outputs, a log line, a progress and its end."""
    await deploy(gw.client, "double", Doubler)
    answer = await gw.client.post("/double", json={"n": 1}, headers=USER)
    assert answer.status_code == 202, answer.text
    task = await gw.task()
    task.start()
    task.stream([{"index": 0, "value": {"a": 1}, "encoding": "json"}])
    task.progress(0.5, "half way")
    task.stream([{"type": "log", "line": "working", "stream": "stderr"}])
    task.stream([{"index": 1, "value": "text out", "encoding": "text"}])
    task.succeed(b'[{"a": 1}, "text out"]')
    workload_id: str = answer.json()["id"]
    for _ in range(1000):
        record = (await gw.client.get(f"/double/{workload_id}", headers=USER)).json()
        if record["status"] == "completed":
            return workload_id
        await asyncio.sleep(0.005)
    raise AssertionError("did not complete")


@sync
async def test_a_finished_workload_replays_as_server_sent_events() -> None:
    async with driven_gateway() as gw:
        workload_id = await finished_workload(gw)
        answer = await gw.client.get(
            f"/double/{workload_id}/events", headers={**USER, "Accept": "text/event-stream"}
        )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.text.startswith("retry: ")
    events, _ = parse_sse(answer.text)
    assert [e["event"] for e in events] == [
        "start",
        "output",
        "progress",
        "log",
        "output",
        "completed",
    ]
    assert [e["id"] for e in events] == ["1", "2", "3", "4", "5", "6"]
    for event in events:
        data = event["data"]
        assert data["type"] == event["event"] and str(data["event_id"]) == event["id"]
        assert data["attempt"] == 1 and data["timestamp"].endswith("Z")
        assert data["id"] == workload_id and data["api"] == "double"
    assert events[1]["data"]["value"] == {"a": 1}
    assert events[4]["data"]["value"] == "text out"
    assert events[4]["data"]["encoding"] == "text"
    assert events[3]["data"]["line"] == "working"
    assert events[2]["data"]["fraction"] == 0.5
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["result"] == [{"a": 1}, "text out"]


@sync
async def test_last_event_id_resumes_after_it() -> None:
    async with driven_gateway() as gw:
        workload_id = await finished_workload(gw)
        path = f"/double/{workload_id}/events"
        by_header = await gw.client.get(path, headers={**USER, "Last-Event-ID": "4"})
        by_query = await gw.client.get(path, params={"last_event_id": "4"}, headers=USER)
        past_the_end = await gw.client.get(path, headers={**USER, "Last-Event-ID": "99"})
        bad = await gw.client.get(path, headers={**USER, "Last-Event-ID": "four"})
    assert [e["id"] for e in parse_sse(by_header.text)[0]] == ["5", "6"]
    assert parse_sse(by_query.text)[0] == parse_sse(by_header.text)[0]
    # nothing after 99: the stream still ends, with the terminal event made from the record
    assert [e["event"] for e in parse_sse(past_the_end.text)[0]] == ["completed"]
    assert "Last-Event-ID" in assert_error(bad, 422)


@sync
async def test_the_json_form_lists_the_events_so_far() -> None:
    async with driven_gateway() as gw:
        workload_id = await finished_workload(gw)
        answer = await gw.client.get(
            f"/double/{workload_id}/events",
            params={"last_event_id": 2},
            headers={**USER, "Accept": "application/json"},
        )
    assert answer.status_code == 200
    assert [e["event_id"] for e in answer.json()["events"]] == [3, 4, 5, 6]


@sync
async def test_logs_are_plain_text_and_errors_are_json() -> None:
    async with driven_gateway() as gw:
        workload_id = await finished_workload(gw)
        logs = await gw.client.get(f"/double/{workload_id}/logs", headers=USER)
        missing = await gw.client.get(f"/double/{'0' * 32}/events", headers=USER)
        no_token = await gw.client.get(f"/double/{workload_id}/events")
        bad_id = await gw.client.get("/double/not-an-id/logs", headers=USER)
        other_api = await gw.client.get(f"/nope/{workload_id}/events", headers=USER)
        # a key of another caller gets nothing of it
        created = await gw.client.post(
            "/keys", json={"name": "eve", "apis": ["double"]}, headers=ADMIN
        )
        eve = {"Authorization": f"Bearer {created.json()['key']}"}
        not_hers = await gw.client.get(f"/double/{workload_id}/events", headers=eve)
        not_her_logs = await gw.client.get(f"/double/{workload_id}/logs", headers=eve)
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
    assert logs.text == "working\n"
    assert_error(missing, 404)
    assert_error(no_token, 401)
    assert_error(bad_id, 400)
    assert_error(other_api, 404)
    assert_error(not_hers, 403)
    assert_error(not_her_logs, 403)


@sync
async def test_webhook_event_choices_are_checked_at_the_door() -> None:
    async with driven_gateway() as gw:
        await deploy(gw.client, "double", Doubler)
        bad = await gw.client.post(
            "/double", json={"n": 1}, headers={**USER, "X-Webhook-Events": "output,everything"}
        )
        assert "everything" in assert_error(bad, 422)
        body = {"predictor": "", "options": {"webhook_events": ["outputs"]}}
        refused = await gw.client.put("/apis/other", json=body, headers=ADMIN)
        assert refused.status_code == 422 and "outputs" in refused.text


@sync
async def test_a_live_stream_sends_keep_alives_then_the_events_as_they_come(
    monkeypatch: Any,
) -> None:
    from asyncnb.contract import events as contract_events

    monkeypatch.setattr(contract_events, "SSE_KEEPALIVE_S", 0.05)
    async with driven_gateway() as gw:
        await deploy(gw.client, "double", Doubler)
        answer = await gw.client.post("/double", json={"n": 1}, headers=USER)
        workload_id = answer.json()["id"]
        task = await gw.task()
        reading = asyncio.ensure_future(
            gw.client.get(f"/double/{workload_id}/events", headers=USER)
        )
        await asyncio.sleep(0.3)  # queued, then started: nothing to say for a while
        task.start()
        await asyncio.sleep(0.3)
        task.stream([{"index": 0, "value": 7, "encoding": "json"}])
        task.succeed(b"[7]")
        streamed = await asyncio.wait_for(reading, 10)
    events, comments = parse_sse(streamed.text)
    assert [e["event"] for e in events] == ["start", "output", "completed"]
    assert comments.count(": keep-alive") >= 4, comments
