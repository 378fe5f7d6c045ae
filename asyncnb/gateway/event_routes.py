"""A workload's events as Server-Sent Events (`GET /{api}/{id}/events`), and its log.

The format is contract/events.py's; the engine's EventHub numbers, keeps and replays them.
Each SSE event is `id: <event_id>`, `event: <type>` and `data: <JSON>`; `Last-Event-ID` (or
`?last_event_id=`) resumes after that id. A comment line goes out every `SSE_KEEPALIVE_S`
while nothing happens. The stream ends after the terminal event.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..contract import events as contract_events
from ..engine import Engine
from ..engine.workload import WorkloadState
from .auth import Caller
from .errors import HTTPError
from .routes import engine_of, find_workload
from .schemas import content, errors

SSE_MEDIA = "text/event-stream"
# Sent first: how long a client waits before reconnecting (EventSource reads it).
RETRY_MS = 2000
MAX_EVENTS_JSON = 1000
# One event of the stream as SSE readers parse it (its `data` is the event's JSON, see
# docs/http-api.md): what schema-driven tools check every event of the stream against.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string", "description": "the event's event_id"},
        "event": {
            "type": "string",
            "enum": list(contract_events.EVENT_TYPES),
            "description": "the event's type",
        },
        "data": {"type": "string", "description": "the event as one line of JSON"},
        "retry": {"type": "integer"},
    },
}


def last_event_id(request: Request) -> int:
    """Where a reader resumes: `Last-Event-ID`, else `?last_event_id=`, else the start."""
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if text is None or text.strip() == "":
        return 0
    text = text.strip()
    if not text.isdigit() or len(text) > 18:
        raise HTTPError(422, f"Last-Event-ID must be an event id (a whole number), not {text!r}")
    return int(text)


# Encoded frames of the newest events: ten readers of one workload encode each event once.
_FRAMES: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
_FRAMES_KEPT = 4096


def sse_frame(event: dict[str, Any]) -> bytes:
    key = (str(event.get("id")), int(event["event_id"]), str(event["type"]))
    frame = _FRAMES.get(key)
    if frame is None:
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)
        frame = f"id: {event['event_id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()
        _FRAMES[key] = frame
        if len(_FRAMES) > _FRAMES_KEPT:
            _FRAMES.popitem(last=False)
    return frame


async def sse_stream(engine: Engine, workload: WorkloadState, after: int) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    keepalive_s = contract_events.SSE_KEEPALIVE_S
    async for event in engine.events.follow(workload, after, keepalive_s):
        yield b": keep-alive\n\n" if event is None else sse_frame(event)


def add_event_routes(app: FastAPI) -> None:
    async def find(request: Request, api: str, workload_id: str) -> tuple[Caller, WorkloadState]:
        who, workload = await find_workload(request, api, workload_id)
        who.must_own(workload)  # events and logs are as much its own as its result
        return who, workload

    @app.get(
        "/{api}/{workload_id}/events",
        tags=["workloads"],
        response_class=Response,
        responses={
            **content(
                "Server-Sent Events: start, progress, output, log, then one terminal event "
                "(`Accept: application/json`: the events so far, as a list)",
                {SSE_MEDIA: {"schema": SSE_EVENT_SCHEMA}, "application/json": {}},
            ),
            **errors(400, 401, 403, 404, 422, 429),
        },
    )
    async def workload_events(api: str, workload_id: str, request: Request) -> Response:
        """The workload's events, live until it ends; `Last-Event-ID` resumes after an id."""
        after = last_event_id(request)
        _, workload = await find(request, api, workload_id)
        engine = engine_of(request)
        accept = request.headers.get("accept", "")
        if "application/json" in accept and SSE_MEDIA not in accept:
            found = await engine.events.history(workload, after, MAX_EVENTS_JSON)
            return JSONResponse({"events": found}, headers={"Cache-Control": "no-store"})
        return StreamingResponse(
            sse_stream(engine, workload, after),
            media_type=SSE_MEDIA,
            headers={
                "Cache-Control": "no-store",
                # nginx and the Jupyter extension pass it on at once instead of buffering
                "X-Accel-Buffering": "no",
            },
        )

    @app.get(
        "/{api}/{workload_id}/logs",
        tags=["workloads"],
        response_class=Response,
        responses={
            **content(
                "What the predictor wrote to stdout, stderr and logging while this workload "
                f"ran: the newest {contract_events.LOG_CAP_BYTES // 1024} KiB of its latest "
                "attempt",
                {"text/plain": {"schema": {"type": "string"}}},
            ),
            **errors(400, 401, 403, 404, 422, 429),
        },
    )
    async def workload_logs(api: str, workload_id: str, request: Request) -> Response:
        _, workload = await find(request, api, workload_id)
        text = await engine_of(request).events.log_text(workload)
        return PlainTextResponse(text, headers={"Cache-Control": "no-store"})
