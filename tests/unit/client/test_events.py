"""A workload's event stream as the client reads it, over mock transports (no gateway, no
process): the SSE parser, resuming with Last-Event-ID after drops, restarts and 503s, giving
up in time, outputs() across attempts, the async forms and logs()."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from asyncnb.client import (
    AsyncAPI,
    Client,
    EventStreamLost,
    Workload,
    describe_output,
    describe_progress,
    parse_sse,
)
from asyncnb.client import events as client_events
from asyncnb.errors import GatewayError, UsageError, WorkloadCancelled, WorkloadFailed

WID = "a" * 32
SSE = {"content-type": "text/event-stream; charset=utf-8"}


@pytest.fixture(autouse=True)
def _quick_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_events, "RECONNECT_FIRST_S", 0.001)
    monkeypatch.setattr(client_events, "RECONNECT_MAX_S", 0.005)


def event(event_id: int, type: str, attempt: int = 1, **fields: Any) -> dict[str, Any]:
    """An event as the gateway sends it in `data:`."""
    return {
        "event_id": event_id,
        "type": type,
        "id": WID,
        "api": "demo",
        "attempt": attempt,
        "timestamp": "2026-12-02T10:00:00.123Z",
        **fields,
    }


def output(event_id: int, index: int, value: Any, attempt: int = 1) -> dict[str, Any]:
    if isinstance(value, bytes):
        encoded = base64.b64encode(value).decode()
        fields = {"value": encoded, "encoding": "base64", "content_type": "image/png"}
    else:
        fields = {"value": value, "encoding": "text" if isinstance(value, str) else "json"}
    return event(event_id, "output", attempt, index=index, **fields)


def completed(event_id: int, result: Any = None) -> dict[str, Any]:
    return event(event_id, "completed", status="completed", result=result)


def frame(data: dict[str, Any]) -> bytes:
    return f"id: {data['event_id']}\nevent: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


class Gateway:
    """Answers each GET of the events route with the next of `answers`: a list of events (and
    "drop", to end the connection with a read error there, or "keep-alive"), a status, or
    "down" (refused)."""

    def __init__(self, *answers: list[Any] | int | str) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def _next(self, request: httpx.Request) -> list[Any] | int:
        self.requests.append(request)
        assert request.url.path == f"/demo/{WID}/events", request.url
        assert self.answers, "no more connections expected"
        answer = self.answers.pop(0)
        if answer == "down":  # no gateway listening (it restarts)
            raise httpx.ConnectError("connection refused")
        return answer

    def sync(self, request: httpx.Request) -> httpx.Response:
        answer = self._next(request)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"detail": f"status {answer}"})

        def body() -> Iterator[bytes]:
            for item in answer:
                if item == "drop":
                    raise httpx.ReadError("connection reset")
                if isinstance(item, bytes):  # as it is
                    yield item
                else:
                    yield b": keep-alive\n\n" if item == "keep-alive" else frame(item)

        return httpx.Response(200, headers=SSE, content=body())

    async def asynchronous(self, request: httpx.Request) -> httpx.Response:
        answer = self._next(request)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"detail": f"status {answer}"})

        async def body() -> AsyncIterator[bytes]:
            for item in answer:
                await asyncio.sleep(0)
                if item == "drop":
                    raise httpx.ReadError("connection reset")
                yield b": keep-alive\n\n" if item == "keep-alive" else frame(item)

        return httpx.Response(200, headers=SSE, content=body())

    def last_ids(self) -> list[str | None]:
        return [r.headers.get("last-event-id") for r in self.requests]


def workload_on(gateway: Gateway, handler: Callable[[httpx.Request], httpx.Response] | None = None):
    """A real Workload handle whose client (sync and async) answers through `gateway`."""
    client = Client("http://gw.invalid", token="t0ken")
    client._http = httpx.Client(
        base_url=client.url,
        headers=client.auth_headers(),
        transport=httpx.MockTransport(handler or gateway.sync),
    )

    def async_http(timeout: float = 10.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=client.url,
            headers=client.auth_headers(),
            transport=httpx.MockTransport(gateway.asynchronous),
        )

    client.async_http = async_http  # type: ignore[method-assign]
    return Workload(AsyncAPI(client, "demo"), WID)


# the parser -----------------------------------------------------------------------------------
def test_parse_sse_reads_fields_as_the_spec_does() -> None:
    body = (
        ": keep-alive\n"
        "\n"
        "retry: 2500\n"
        "id: 1\n"
        "event: log\n"
        "data: first line\n"
        "data:second line\n"
        "data\n"
        "\n"
        "data: inherits the id\n"
        "unknown: ignored\n"
        "\n"
        "id\n"
        "retry: soon\n"
        "data:  two spaces keep one\n"
        "\n"
        "event: only a type\n"
        "\n"
        "data: never finished"
    )
    events = list(parse_sse(body.split("\n")))
    assert [(e.event, e.data, e.id, e.retry) for e in events] == [
        ("log", "first line\nsecond line\n", "1", 2500),
        ("message", "inherits the id", "1", 2500),
        ("message", " two spaces keep one", "", 2500),
    ]


def test_parse_sse_takes_lines_with_their_endings() -> None:
    (only,) = parse_sse(["id: 7\r\n", "data: {}\r\n", "\r\n"])
    assert (only.id, only.data) == ("7", "{}")


# the sync stream ------------------------------------------------------------------------------
def test_stream_resumes_after_a_drop_with_the_last_event_id() -> None:
    gateway = Gateway(
        [event(1, "start"), output(2, 0, {"a": 1}), "drop"],
        [output(3, 1, "two"), completed(4, [{"a": 1}, "two"])],
    )
    workload = workload_on(gateway)
    seen = list(workload.stream())
    assert [e["event_id"] for e in seen] == [1, 2, 3, 4]
    assert [e["type"] for e in seen] == ["start", "output", "output", "completed"]
    assert seen[-1]["result"] == [{"a": 1}, "two"]
    assert gateway.last_ids() == [None, "2"]
    first = gateway.requests[0]
    assert first.headers["accept"] == "text/event-stream"
    assert first.headers["authorization"] == "Bearer t0ken"


def test_stream_resumes_after_an_early_end_a_restart_and_503s() -> None:
    gateway = Gateway(
        [event(1, "start"), "keep-alive"],  # ended without a terminal event
        "down",  # the gateway restarting
        503,
        502,
        [event(1, "start"), event(2, "log", line="hello", stream="stdout")],  # one repeated
        [completed(3)],
    )
    seen = list(workload_on(gateway).stream(reconnect_s=5))
    assert [e["event_id"] for e in seen] == [1, 2, 3]  # no duplicate, no gap
    assert gateway.last_ids() == [None, "1", "1", "1", "1", "2"]


def test_stream_reads_split_data_and_waits_as_retry_says() -> None:
    gateway = Gateway(
        [
            b"retry: 40\r\nid: 1\r\nevent: start\r\n",
            b'data: {"event_id": 1,\r\ndata: "ty',
            b'pe": "start"}\r\n\r\n: keep-alive\r\n\r\n',
        ],
        [b'id: 2\ndata: {"type": "cancelled", "status": "cancelled"}\n\n'],
    )
    started = time.monotonic()
    seen = list(workload_on(gateway).stream())
    assert time.monotonic() - started >= 0.035  # the stream's 40 ms, not our 1 ms
    assert seen == [
        {"event_id": 1, "type": "start"},
        {"event_id": 2, "type": "cancelled", "status": "cancelled"},
    ]
    assert gateway.last_ids() == [None, "1"]


def test_stream_starts_after_a_given_event_id() -> None:
    gateway = Gateway([completed(9)], 429, [output(3, 0, "seen"), completed(3)])
    assert [e["event_id"] for e in workload_on(gateway).stream(last_event_id=8)] == [9]
    # past the end: the end is still the end, whatever its id
    assert [e["type"] for e in workload_on(gateway).stream(last_event_id=9)] == ["completed"]
    assert gateway.last_ids() == ["8", "9", "9"]


def test_stream_gives_up_after_its_reconnect_time() -> None:
    gateway = Gateway([event(1, "start"), "drop"], *([503] * 1000))
    workload = workload_on(gateway)
    seen = []
    with pytest.raises(EventStreamLost) as lost:
        for item in workload.stream(reconnect_s=0.2):
            seen.append(item)
    assert [e["event_id"] for e in seen] == [1]
    assert lost.value.last_event_id == 1 and lost.value.status_code == 503
    assert isinstance(lost.value, GatewayError)
    assert "lost the event stream" in str(lost.value) and "after event 1" in str(lost.value)
    assert len(gateway.requests) > 2


def test_an_unknown_workload_or_a_refusal_is_raised_at_once() -> None:
    with pytest.raises(UsageError, match="status 404"):
        list(workload_on(Gateway(404)).stream())
    with pytest.raises(GatewayError, match="status 401") as refused:
        list(workload_on(Gateway(401)).stream())
    assert refused.value.status_code == 401


def test_a_body_that_is_no_event_stream_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "completed"})

    with pytest.raises(GatewayError, match="expected an event stream"):
        list(workload_on(Gateway(), handler).stream())


# outputs ----------------------------------------------------------------------------------------
def test_outputs_skip_the_indexes_a_retried_attempt_emits_again() -> None:
    gateway = Gateway(
        [
            event(1, "start"),
            output(2, 0, {"n": 0}),
            event(3, "progress", fraction=0.5, message="half"),
            output(4, 1, "one"),
            event(5, "start", attempt=2),  # the worker died: a second attempt
            output(6, 0, {"n": 0}, attempt=2),
            "drop",
        ],
        [
            output(7, 1, "one", attempt=2),
            output(8, 2, b"\x89PNG", attempt=2),
            event(9, "output", attempt=2, index=3, truncated=True, size=5_000_000),
            completed(10),
        ],
    )
    assert list(workload_on(gateway).outputs()) == [{"n": 0}, "one", b"\x89PNG", None]


def test_outputs_raise_as_result_does_at_a_failed_or_cancelled_end() -> None:
    error = {"type": "ValueError", "message": "odd n", "traceback": "..."}
    failing = Gateway([output(1, 0, 1), event(2, "failed", status="failed", error=error)])
    got = []
    with pytest.raises(WorkloadFailed, match="odd n") as failed:
        for value in workload_on(failing).outputs():
            got.append(value)
    assert got == [1] and failed.value.workload_id == WID
    with pytest.raises(WorkloadCancelled):
        list(workload_on(Gateway([event(1, "cancelled", status="cancelled")])).outputs())


# the async forms ------------------------------------------------------------------------------
def test_astream_and_aoutputs_resume_the_same_way() -> None:
    gateway = Gateway(
        [event(1, "start"), output(2, 0, "a"), "drop"],
        503,
        [event(3, "start", attempt=2), output(4, 0, "a", attempt=2), output(5, 1, "b", 2)],
        [completed(6)],
    )
    workload = workload_on(gateway)

    async def scenario() -> tuple[list[int], list[Any]]:
        ids = [e["event_id"] async for e in workload.astream()]
        gateway.answers = [[output(1, 0, [1, 2]), "drop"], [completed(2)]]
        values = [v async for v in workload.aoutputs()]
        return ids, values

    ids, values = asyncio.run(scenario())
    assert ids == [1, 2, 3, 4, 5, 6]
    assert values == [[1, 2]]
    assert gateway.last_ids() == [None, "2", "2", "5", None, "1"]


def test_astream_gives_up_and_refuses_like_the_sync_one() -> None:
    async def drain(workload: Workload, **options: Any) -> list[dict[str, Any]]:
        return [e async for e in workload.astream(**options)]

    with pytest.raises(EventStreamLost):
        asyncio.run(drain(workload_on(Gateway(*([503] * 1000))), reconnect_s=0.1))
    with pytest.raises(UsageError):
        asyncio.run(drain(workload_on(Gateway(404))))


def test_an_abandoned_astream_closes_its_connection() -> None:
    gateway = Gateway([event(1, "start"), "keep-alive", output(2, 0, 1), "keep-alive"])
    workload = workload_on(gateway)

    async def scenario() -> dict[str, Any]:
        events = workload.astream()
        first = await events.__anext__()
        await events.aclose()  # type: ignore[attr-defined]
        return first

    assert asyncio.run(scenario())["event_id"] == 1
    assert len(gateway.requests) == 1


# logs and showing events ----------------------------------------------------------------------
def test_logs_are_the_text_of_the_logs_route() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/demo/{WID}/logs":
            return httpx.Response(200, text="loading\nstep 1\n")
        return httpx.Response(404, json={"detail": f"workload {request.url.path} not found"})

    workload = workload_on(Gateway(), handler)
    assert workload.logs() == "loading\nstep 1\n"
    with pytest.raises(UsageError, match="not found"):
        Workload(workload.api, "b" * 32).logs()


def test_outputs_and_progress_as_text() -> None:
    assert describe_output(output(1, 0, {"a": [1, 2], "é": None})) == '{"a":[1,2],"é":null}'
    assert describe_output(output(1, 0, "as it is\n")) == "as it is\n"
    assert describe_output(output(1, 0, b"\x00" * 5)) == "<5 bytes image/png>"
    truncated = event(1, "output", index=0, truncated=True, size=9, content_type="text/csv")
    assert describe_output(truncated) == "<9 bytes text/csv, too large for the event>"
    assert describe_progress(event(1, "progress", fraction=0.4, message="page 2/5")) == (
        "progress 40% page 2/5"
    )
    assert describe_progress(event(1, "progress", fraction=None, message=None)) == "progress"
