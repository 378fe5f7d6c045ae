"""What every adapter needs of the gateway: submit a JSON payload, find a workload, check
that the API is served by the contract. Auth, limits, idempotency and webhooks are the native
API's own (gateway/submission.py), so an adapter cannot drift from them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request

from ...engine import NotFound
from ...engine.workload import NO_INLINE, WorkloadState
from ..auth import Access, Caller
from ..errors import HTTPError
from ..routes import caller, engine_of, find_workload, settings_of
from ..submission import Answer, submit_workload, valid_api, valid_id

__all__ = [
    "Access",
    "Caller",
    "HTTPError",
    "engine_of",
    "find",
    "result_value",
    "served_api",
    "submit_json",
    "who",
]


def served_api(request: Request, contract: str, api: str) -> str:
    """`api`, when it exists and its `compat` option lets `contract` serve it; else 404."""
    valid_api(api)
    state = engine_of(request).api(api)  # NotFound (404) for an API never deployed
    allowed = state.options.compat
    if allowed is not None and contract not in allowed:
        raise HTTPError(404, f"API {api!r} is not served by the {contract} contract")
    return api


def who(request: Request, access: Access, api: str, authorization: str | None = None) -> Caller:
    """The caller, from `authorization` (a contract's own header style, already turned into
    `Bearer <credential>`) or the request's `Authorization`."""
    if authorization is None:
        return caller(request, access, api)
    from ..auth import authorize

    engine = getattr(request.app.state, "engine", None)
    return authorize(
        settings_of(request),
        engine.keys if engine is not None else None,
        authorization,
        access,
        api,
    )


def public_base(request: Request) -> str:
    """Where clients reach the gateway, for the absolute URLs a contract answers with:
    `--public-url`, else the address it serves on; never the request's `Host`, which any
    client may set (as the native API's `APIRecord.url`)."""
    configured = settings_of(request).public_url or getattr(request.app.state, "base_url", None)
    return str(configured or request.base_url).rstrip("/")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def submit_json(
    request: Request,
    api: str,
    payload: Any,
    submitter: Caller,
    *,
    headers: Mapping[str, str] | None = None,
    webhook_format: dict[str, str] | None = None,
) -> Answer:
    """Submit `payload` as a JSON workload of `api`, as `POST /{api}` would with `headers`
    (lower-case names: `idempotency-key`, `x-webhook-url`, `x-webhook-events`, `x-priority`,
    `prefer`). `webhook_format`: its `x-webhook-url` gets the contract's body shape
    (engine/webhook_formats.py)."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    given = {k.lower(): v for k, v in (headers or {}).items()}
    given["content-type"] = "application/json"
    given["content-length"] = str(len(data))
    return await submit_workload(
        engine_of(request),
        settings_of(request),
        api,
        given,
        _once(data),
        submitter,
        webhook_format=webhook_format,
    )


async def find(
    request: Request, api: str, workload_id: str, asker: Caller | None = None
) -> tuple[Caller, WorkloadState]:
    """The caller and the workload, which that caller may see (403 otherwise; 404 when
    there is none). `asker`: a caller the adapter authorized itself (its own header style)."""
    if asker is None:
        asker, workload = await find_workload(request, api, workload_id)
    else:
        valid_api(api)
        valid_id(workload_id)
        found = await engine_of(request).get(api, workload_id)
        if found is None:
            raise NotFound(f"workload {workload_id} of API {api!r} not found")
        workload = found
    asker.may_see(workload)
    return asker, workload


async def result_value(request: Request, workload: WorkloadState) -> Any:
    """A completed workload's result as a JSON value: the contracts carry JSON results.

    A JSON result kept in storage (over the inline limit) is read and decoded; any other
    result is `{"result_url": ...}`, where the native API serves its bytes."""
    inline = workload.inline_result()
    if inline is not NO_INLINE:
        return inline
    media = (workload.result_content_type or "").split(";")[0].strip()
    engine = engine_of(request)
    data = workload.result_data
    if data is None and media == "application/json":
        path = engine.storage.result_path(workload.api, workload.id)
        data = await engine.io(engine.storage.read_bytes, path)
    if data is not None and media == "application/json":
        return json.loads(data)
    return {"result_url": f"/{workload.api}/{workload.id}/result"}
