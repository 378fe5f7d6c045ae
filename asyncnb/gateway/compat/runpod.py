"""RunPod's serverless contract (`runpod.Endpoint`), under `/compat/runpod/v2`.

Point `runpod.endpoint_url_base` at `<gateway>/compat/runpod/v2` and an endpoint id is an API:

- `POST /{api}/run` queues `{"input": ...}` and answers `{"id", "status"}`;
  `POST /{api}/runsync` also waits (`?wait=` ms, at most 60 s) and answers the job's status.
- `GET|POST /{api}/status/{id}`: `{"id", "status", "delayTime"?, "executionTime"?,
  "output"?, "error"?}` (runpod_shapes.py); `GET|POST /{api}/stream/{id}`: the outputs of a
  generator predictor since the previous call (runpod_stream.py).
- `POST /{api}/cancel/{id}` cancels the job (a finished one is left as it is, and its status
  answered); `POST /{api}/purge-queue` cancels the caller's queued jobs (every queued job,
  for the gateway's tokens); `GET /{api}/health` counts jobs and workers.

Credentials are asyncnb's tokens and API keys, as `Authorization: Bearer <credential>` (what
the `runpod` package sends) or RunPod's bare `Authorization: <credential>`, with the native
scopes: `invoke` runs, cancels and purges the key's own jobs and reads them, `read` reads the
API's health and others' job statuses (without their output).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...contract.status import Status
from ...engine import Conflict
from ...engine.webhook_formats import register_webhook_format
from ...engine.workload import WorkloadState
from ..schemas import errors, ok
from ..submission import MAX_WAIT_S
from .common import (
    Access,
    Caller,
    HTTPError,
    engine_of,
    find,
    result_value,
    served_api,
    submit_json,
    who,
)
from .runpod_request import job_request, read_job_body
from .runpod_shapes import (
    JOB_REQUEST_SCHEMA,
    RunpodHealth,
    RunpodJob,
    RunpodPurged,
    RunpodStream,
    health_record,
    job_record,
    webhook_job,
)
from .runpod_stream import StreamCursors, next_chunks

CONTRACT = "runpod"
# a job's own webhook gets RunPod's status body (runpod_shapes.webhook_job)
WEBHOOK_FORMAT = {"contract": CONTRACT}
BASE = "/v2"
MAX_WAIT_MS = 300_000  # RunPod's own bound of `?wait=`; asyncnb waits at most MAX_WAIT_S
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": JOB_REQUEST_SCHEMA}},
    }
}
_JOB_ERRORS = errors(400, 401, 403, 404, 422, 429)
_SUBMIT_ERRORS = {**_JOB_ERRORS, **errors(408, 413, 503)}


def _authorization(request: Request) -> str:
    """`Authorization` as asyncnb reads it: RunPod's bare `<credential>` becomes a bearer."""
    given = request.headers.get("authorization", "").strip()
    return f"Bearer {given}" if given and " " not in given else given


def _caller(request: Request, access: Access, api: str) -> Caller:
    caller = who(request, access, api, _authorization(request))
    served_api(request, CONTRACT, api)
    return caller


async def _job(request: Request, asker: Caller, workload: WorkloadState) -> dict[str, Any]:
    owner = asker.owns(workload)
    output = None
    if owner and workload.status is Status.COMPLETED:
        output = await result_value(request, workload)
    return job_record(workload, owner, output)


def _wait_s(wait: int | None) -> float:
    if wait is None:
        return MAX_WAIT_S
    if not 1 <= wait <= MAX_WAIT_MS:
        raise HTTPError(422, f"wait must be a number of ms within [1, {MAX_WAIT_MS}]")
    return min(wait / 1000, MAX_WAIT_S)


async def _submit(request: Request, api: str, wait_s: float = 0.0) -> tuple[Caller, WorkloadState]:
    submitter = _caller(request, Access.INVOKE, api)
    engine = engine_of(request)
    options = engine.api(api).options
    raw = await read_job_body(
        request.stream(),
        request.headers.get("content-length"),
        options,
        request.app.state.settings.body_timeout_s,
    )
    job = job_request(raw, options, engine.settings.webhook_policy)
    headers = dict(job.headers)
    if key := request.headers.get("idempotency-key"):
        headers["idempotency-key"] = key
    if wait_s:
        headers["prefer"] = f"wait={wait_s:.3f}"
    answer = await submit_json(
        request, api, job.payload, submitter, headers=headers, webhook_format=WEBHOOK_FORMAT
    )
    _, workload = await find(request, api, answer.body["id"], submitter)
    return submitter, workload


def _get_and_post(
    router: APIRouter,
    path: str,
    name: str,
    endpoint: Callable[..., Awaitable[JSONResponse]],
    **kw: Any,
) -> None:
    """RunPod answers `status` and `stream` to GET and POST alike: one operation each."""
    for method in ("GET", "POST"):
        router.add_api_route(
            path, endpoint, methods=[method], name=f"{name}_{method.lower()}", **kw
        )


def add_routes(router: APIRouter) -> None:
    register_webhook_format(CONTRACT, webhook_job)
    cursors = StreamCursors()

    @router.post(
        f"{BASE}/{{api}}/run",
        openapi_extra=_BODY,
        responses={**ok(RunpodJob, '`{"id", "status"}`: queued'), **_SUBMIT_ERRORS},
    )
    async def runpod_run(api: str, request: Request) -> JSONResponse:
        """Queue a job: the body is `{"input": <payload>, "webhook"?, "policy"?}`."""
        _, workload = await _submit(request, api)
        return JSONResponse({"id": workload.id, "status": job_record(workload, True)["status"]})

    @router.post(
        f"{BASE}/{{api}}/runsync",
        openapi_extra=_BODY,
        responses={
            **ok(
                RunpodJob, "The job's status: final, or IN_QUEUE/IN_PROGRESS when the wait ran out"
            ),
            **_SUBMIT_ERRORS,
        },
    )
    async def runpod_runsync(api: str, request: Request, wait: int | None = None) -> JSONResponse:
        """Queue a job and wait for it (`wait` ms, at most 60 s)."""
        wait_s = _wait_s(wait)
        submitter, workload = await _submit(request, api, wait_s)
        return JSONResponse(await _job(request, submitter, workload))

    async def runpod_status(api: str, workload_id: str, request: Request) -> JSONResponse:
        asker = _caller(request, Access.WORKLOAD, api)
        _, workload = await find(request, api, workload_id, asker)
        return JSONResponse(await _job(request, asker, workload))

    _get_and_post(
        router,
        f"{BASE}/{{api}}/status/{{workload_id}}",
        "runpod_status",
        runpod_status,
        responses={**ok(RunpodJob, "The job's status"), **_JOB_ERRORS},
        summary="Runpod Status",
    )

    async def runpod_stream(api: str, workload_id: str, request: Request) -> JSONResponse:
        asker = _caller(request, Access.WORKLOAD, api)
        _, workload = await find(request, api, workload_id, asker)
        asker.must_own(workload)  # its outputs are as much its own as its result
        cursor = cursors.of(workload.id)
        async with cursor.lock:
            chunks = await next_chunks(
                engine_of(request), workload, cursor, lambda: result_value(request, workload)
            )
        if chunks.ended:
            status = job_record(workload, True)["status"]
        else:  # the terminal event (and any last outputs) come on a later call
            queued = workload.status is Status.IN_QUEUE
            status = "IN_QUEUE" if queued else "IN_PROGRESS"
        body = {"status": status, "stream": [{"output": o} for o in chunks.outputs]}
        return JSONResponse(body)

    _get_and_post(
        router,
        f"{BASE}/{{api}}/stream/{{workload_id}}",
        "runpod_stream",
        runpod_stream,
        responses={**ok(RunpodStream, "The outputs since the previous call"), **_JOB_ERRORS},
        summary="Runpod Stream",
    )

    @router.post(
        f"{BASE}/{{api}}/cancel/{{workload_id}}",
        responses={
            **ok(RunpodJob, '`{"id", "status"}`: cancelled, or already finished'),
            **_JOB_ERRORS,
            **errors(503),
        },
    )
    async def runpod_cancel(api: str, workload_id: str, request: Request) -> JSONResponse:
        asker = _caller(request, Access.WORKLOAD, api)
        _, workload = await find(request, api, workload_id, asker)
        asker.must_own(workload)
        if not workload.status.finished:
            try:
                workload = await engine_of(request).cancel(api, workload_id)
            except Conflict:
                pass  # it finished meanwhile: its status says how
        return JSONResponse({"id": workload.id, "status": job_record(workload, True)["status"]})

    @router.get(
        f"{BASE}/{{api}}/health",
        responses={
            **ok(RunpodHealth, "The API's jobs and workers"),
            **errors(401, 403, 404, 422, 429),
        },
    )
    async def runpod_health(api: str, request: Request) -> JSONResponse:
        _caller(request, Access.READ, api)
        return JSONResponse(health_record(engine_of(request).api(api)))

    @router.post(
        f"{BASE}/{{api}}/purge-queue",
        responses={
            **ok(RunpodPurged, "The caller's queued jobs are cancelled"),
            **errors(401, 403, 404, 422, 429, 503),
        },
    )
    async def runpod_purge_queue(api: str, request: Request) -> JSONResponse:
        """Cancel the queued jobs: a key's own, or every one for the gateway's tokens."""
        purger = _caller(request, Access.INVOKE, api)
        engine = engine_of(request)
        removed = 0
        for workload in engine.recent(api, Status.IN_QUEUE, 10**9):
            if not purger.owns(workload) or workload.status is not Status.IN_QUEUE:
                continue
            try:
                await engine.cancel(api, workload.id)
            except Conflict:
                continue  # it started or ended meanwhile: no longer queued
            removed += 1
        return JSONResponse({"removed": removed, "status": "completed"})
