"""Cortex's AsyncAPI contract (v0.31-v0.42), under `/compat/cortex`.

- `POST /{api}` with any JSON body answers `200 {"id"}` once the workload is persisted.
- `GET /{api}/{id}` answers `{"id", "status"}`, plus `result` and `timestamp` (when it
  finished) once completed. Cortex knew four statuses: a cancelled workload reads `failed`,
  and a failed one carries no error, as in Cortex (the native `GET /{api}/{id}` has it).
- An unknown id gets 404 (with a JSON `detail`, where Cortex sent plain text).

Credentials are asyncnb's (`Authorization: Bearer`); Cortex had none of its own.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...contract.status import Status
from ..schemas import errors, ok
from .common import Access, HTTPError, find, result_value, served_api, submit_json, who

CONTRACT = "cortex"
_STATUS = {
    Status.IN_QUEUE: "in_queue",
    Status.IN_PROGRESS: "in_progress",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "failed",
}


class CortexSubmitted(BaseModel):
    id: str


class CortexWorkload(BaseModel):
    id: str
    status: Literal["in_queue", "in_progress", "completed", "failed"]
    result: Any = None
    timestamp: str | None = None


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise HTTPError(400, "the body must be JSON (Cortex's payloads are)") from None


def add_routes(router: APIRouter) -> None:
    @router.post(
        "/{api}",
        response_model=None,
        responses={
            **ok(CortexSubmitted, "Persisted: the workload's id"),
            **errors(400, 401, 403, 404, 413, 422, 429, 503),
        },
    )
    async def submit(api: str, request: Request) -> JSONResponse:
        submitter = who(request, Access.INVOKE, api)
        served_api(request, CONTRACT, api)
        payload = await _json_body(request)
        headers = {}
        if key := request.headers.get("idempotency-key"):
            headers["idempotency-key"] = key
        answer = await submit_json(request, api, payload, submitter, headers=headers)
        return JSONResponse({"id": answer.body["id"]})

    @router.get(
        "/{api}/{workload_id}",
        response_model=None,
        responses={
            **ok(CortexWorkload, "The status; `result` and `timestamp` once completed"),
            **errors(400, 401, 403, 404, 422, 429),
        },
    )
    async def retrieve(api: str, workload_id: str, request: Request) -> JSONResponse:
        served_api(request, CONTRACT, api)
        _, workload = await find(request, api, workload_id)
        body: dict[str, Any] = {"id": workload.id, "status": _STATUS[workload.status]}
        if workload.status is Status.COMPLETED:
            body["result"] = await result_value(request, workload)
            if workload.finished_at is not None:
                from ...contract.timestamps import isoformat

                body["timestamp"] = isoformat(workload.finished_at)
        return JSONResponse(body)
