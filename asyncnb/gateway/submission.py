"""Submitting a workload: the logic of `POST /{api}`, shared by the FastAPI route and the
framework-free fast path (fastpath.py), so the two can never disagree."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contract.events import parse_event_types
from ..contract.names import api_name_problem, workload_id_problem
from ..contract.settings import GatewaySettings
from ..contract.status import APIPhase
from ..engine import Engine, Unavailable
from ..engine.workload import WorkloadState
from .auth import OWNER_CALLER, Caller
from .errors import HTTPError
from .uploads import Body, check_payload, read_body

MAX_PRIORITY = 1_000_000
MAX_WAIT_S = 60.0
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")
_INTEGER = re.compile(r"-?[0-9]{1,10}")


def valid_api(name: str, *, deploying: bool = False) -> str:
    """Deploying a bad name is a bad request; addressing one finds no API (404)."""
    problem = api_name_problem(name)
    if problem:
        raise HTTPError(400 if deploying else 404, problem)
    return name


def valid_id(workload_id: str) -> str:
    problem = workload_id_problem(workload_id)
    if problem:
        raise HTTPError(400, problem)
    return workload_id


def prefer_wait(headers: Mapping[str, str]) -> float:
    """The `wait=N` preference (RFC 7240), capped at MAX_WAIT_S; 0 without one.

    Other preferences are ignored; a `wait` that is not a plain number of seconds is a bad
    request (`wait=1e9` would otherwise be read as something it does not say)."""
    for preference in headers.get("prefer", "").split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not _SECONDS.fullmatch(value):
            raise HTTPError(
                400, f"Prefer: wait must be a number of seconds (wait=10), got {value[:40]!r}"
            )
        return min(float(value), MAX_WAIT_S)
    return 0.0


def int_header(headers: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = headers.get(name)
    if raw is None:
        return 0
    # strictly digits: int() alone would take '+5', '1_000' and surrounding spaces
    if not _INTEGER.fullmatch(raw):
        raise HTTPError(422, f"{name} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise HTTPError(422, f"{name} must lie within [{low}, {high}], got {value}")
    return value


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _view(workload: WorkloadState, status: int, **headers: str) -> Answer:
    return Answer(status, workload.public(), headers)


def _admit(engine: Engine, caller: Caller) -> None:
    """Hold one of the key's `max_queued` places while its body streams in, or refuse (429)."""
    key = caller.key
    if key is None:
        return
    if not engine.admit(key.id, key.max_queued):
        raise HTTPError(
            429,
            f"API key {key.id} ({key.name}) has {key.max_queued} unfinished workloads, its "
            f"max_queued: wait for some to finish",
            {"Retry-After": "1"},
        )


async def submit_workload(
    engine: Engine,
    settings: GatewaySettings,
    api: str,
    headers: Mapping[str, str],
    chunks: AsyncIterator[bytes],
    caller: Caller = OWNER_CALLER,
    webhook_format: dict[str, str] | None = None,
) -> Answer:
    """Validate, stream the body in, persist, queue; raises HTTPError or EngineError for a
    4xx or a 503. `caller` (authorized already) is who it is attributed to; `webhook_format`
    the shape of its webhook's body, for a peer's contract (engine/webhook_formats.py)."""
    state = engine.api(valid_api(api))
    if state.state is APIPhase.ERROR:
        raise Unavailable(
            f"API {api!r} failed to start and takes no work until redeployed: "
            f"{state.error['message'] if state.error else ''}"
        )
    priority = int_header(headers, "x-priority", -MAX_PRIORITY, MAX_PRIORITY)
    webhook_url = headers.get("x-webhook-url") or None
    if webhook_url and (problem := engine.settings.webhook_policy.problem(webhook_url)):
        raise HTTPError(422, f"X-Webhook-URL: {problem}")
    webhook_events = None
    if (events_header := headers.get("x-webhook-events")) is not None:
        try:
            webhook_events = parse_event_types(events_header)
        except ValueError as exc:
            raise HTTPError(422, str(exc)) from None
    key = headers.get("idempotency-key") or None
    if key is not None and (len(key) > 255 or not key.isprintable()):
        raise HTTPError(422, "Idempotency-Key must be 1-255 printable characters")
    max_bytes = state.options.max_payload_bytes
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPError(413, f"payload is larger than max_payload_bytes={max_bytes}")
    content_type = headers.get("content-type") or "application/octet-stream"
    workload_id = engine.new_id(api, key, caller.key_id)
    # The id is claimed while the body streams in, so a concurrent replay of the same
    # Idempotency-Key waits for this request instead of writing the same payload path.
    while True:
        existing = await engine.replay(api, workload_id) if key is not None else None
        if existing is not None:
            status = 200 if existing.status.finished else 202
            return _view(
                existing,
                status,
                **{"Location": f"/{api}/{existing.id}", "Idempotent-Replayed": "true"},
            )
        if engine.claim(workload_id):
            break
    body: Body | None = None
    holds_place = False
    try:
        _admit(engine, caller)
        holds_place = True
        body = await read_body(
            chunks,
            timeout_s=settings.body_timeout_s,
            storage=engine.storage,
            path=engine.storage.payload_path(api, workload_id),
            inline_limit=engine.settings.inline_payload_bytes,
            max_bytes=max_bytes,
            io=engine.io,
        )
        if body.data is not None:
            check_payload(body.data, content_type)
        workload = WorkloadState(
            workload_id,
            api,
            created_at=time.time(),
            content_type=content_type,
            priority=priority,
            body=body.data,
            payload_stored=body.stored,
            size=body.size,
            webhook_url=webhook_url,
            webhook_events=webhook_events,
            webhook_format=webhook_format if webhook_url else None,
            idempotency_key=key,
            submitted_by=caller.name,
            key_id=caller.key_id,
        )
        workload = await engine.accept(state, workload)
    except BaseException as exc:
        engine.release(workload_id, exc)
        if holds_place:
            engine.admitted(caller.key_id)
        if isinstance(exc, Unavailable) and body is not None and body.stored:
            # The queue entry never landed: the streamed payload belongs to nothing (and an
            # expiry sweep removes it if storage cannot take the delete now either).
            with contextlib.suppress(Exception):
                await engine.io(
                    engine.storage.delete, engine.storage.payload_path(api, workload_id)
                )
        raise
    engine.admitted(caller.key_id)
    wait = prefer_wait(headers)
    answer_headers = {"Location": f"/{api}/{workload.id}"}
    if wait:
        await engine.wait(workload, wait)
        answer_headers["Preference-Applied"] = f"wait={wait:g}"
        if workload.status.finished:
            return _view(workload, 200, **answer_headers)
    return Answer(202, {"id": workload.id, "status": workload.status.value}, answer_headers)
