"""SageMaker Async Inference (`sagemaker-runtime` InvokeEndpointAsync), under
`/compat/sagemaker`: what boto3's `endpoint_url` points at (docs/compat.md).

`POST /endpoints/{api}/async-invocations` reads the object at `X-Amzn-SageMaker-InputLocation`
(in the gateway's storage, sagemaker_locations.py), submits it as a workload of `api` with
`X-Amzn-SageMaker-Content-Type`, and answers `202 {"InferenceId", "OutputLocation"}` with the
`X-Amzn-SageMaker-OutputLocation` and `-FailureLocation` headers. The InferenceId (a uuid when
none is sent) is the workload's Idempotency-Key. When the workload ends, the engine writes the
result to the output location, or the error to the failure location (engine/result_copies.py:
owed durably before the 202, so a restart still writes it). Requests are signed with SigV4
(sagemaker_auth.py). Errors are `{"detail", "message"}` with an `x-amzn-ErrorType` header, so
botocore raises `ClientError` with the code and the message.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ...engine.errors import EngineError, storage_unavailable
from ...engine.workload import WorkloadState
from ..errors import answer_for
from ..schemas import errors
from ..submission import submit_workload
from .common import Caller, HTTPError, engine_of, served_api
from .sagemaker_auth import sagemaker_caller
from .sagemaker_locations import copy_target, input_path, url_of

CONTRACT = "sagemaker"
MAX_REQUEST_BODY = 128_000  # SageMaker's own limit; an async invocation sends none
_H = "x-amzn-sagemaker-"
_INFERENCE_ID = re.compile(r"\S[\x20-\x7e]{0,63}")
_ASCII = re.compile(r"[\x20-\x7e]{0,1024}")
_UNSUPPORTED = ("S3OutputPathExtension", "Filename")
_CODES = {
    401: "AccessDeniedException",
    403: "AccessDeniedException",
    429: "ThrottlingException",
    503: "ServiceUnavailable",
}


class SageMakerError(BaseModel):
    """An error as botocore reads it (`message`, with `x-amzn-ErrorType`), and as asyncnb
    answers every error (`detail`)."""

    detail: str
    message: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": SageMakerError, "description": description}
    for code, description in {
        400: "ValidationError: a missing, malformed or empty input location, a bad header",
        401: "AccessDeniedException: a revoked or expired key",
        403: "a missing or wrong signature, a foreign bucket, a key without this API",
        404: "ValidationError: no such API (or it leaves this contract out)",
        413: "ValidationError: the input is over the API's max_payload_bytes",
        429: "ThrottlingException: the key is past its rate limit or max_queued",
        503: "ServiceUnavailable: storage is unreachable; retry",
    }.items()
}


class AsyncInvocation(BaseModel):
    """What InvokeEndpointAsync answers (its locations are in headers too)."""

    InferenceId: str
    OutputLocation: str


def _aws_error(exc: HTTPError | EngineError) -> Response:
    answer = answer_for(exc)
    detail = json.loads(answer.body)["detail"]
    code = getattr(exc, "code", None) or _CODES.get(answer.status, "ValidationError")
    return JSONResponse(
        {"detail": detail, "message": detail if isinstance(detail, str) else str(detail)},
        status_code=answer.status,
        headers={**answer.headers, "x-amzn-ErrorType": code},
    )


def _header(request: Request, name: str) -> str | None:
    return request.headers.get(_H + name.lower())


def _seconds(request: Request, name: str, low: int, high: int) -> int | None:
    raw = _header(request, name)
    if raw is None:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise HTTPError(400, f"X-Amzn-SageMaker-{name} must be an integer in [{low}, {high}]")
    return int(raw)


def _options(request: Request) -> tuple[str, str, str | None]:
    """(input location, content type, inference id), checked as SageMaker checks them."""
    for name in _UNSUPPORTED:
        if _header(request, name) is not None:
            raise HTTPError(400, f"X-Amzn-SageMaker-{name} is not supported by asyncnb")
    location = _header(request, "InputLocation")
    if not location:
        raise HTTPError(400, "X-Amzn-SageMaker-InputLocation is required (an s3:// URL)")
    content_type = _header(request, "Content-Type") or "application/octet-stream"
    for name in ("Content-Type", "Accept", "Custom-Attributes"):
        value = _header(request, name)
        if value is not None and not _ASCII.fullmatch(value):
            raise HTTPError(400, f"X-Amzn-SageMaker-{name} must be up to 1024 ASCII characters")
    inference_id = _header(request, "Inference-Id")
    if inference_id is not None and not _INFERENCE_ID.fullmatch(inference_id):
        raise HTTPError(
            400,
            "X-Amzn-SageMaker-Inference-Id must be 1-64 printable characters, not a space first",
        )
    # No per-request equivalents: checked as SageMaker does, then ignored (documented).
    _seconds(request, "RequestTTLSeconds", 60, 21600)
    _seconds(request, "InvocationTimeoutSeconds", 1, 3600)
    return location, content_type, inference_id


async def _read_input(request: Request, api: str, location: str) -> bytes:
    engine = engine_of(request)
    storage = engine.storage
    path = input_path(storage, location, api)
    limit = engine.api(api).options.max_payload_bytes
    try:
        size = await engine.io(storage.size, path)
        data = None if size > limit else await engine.io(storage.read_bytes, path)
    except FileNotFoundError:
        data, size = None, -1
    except EngineError:
        raise
    except Exception as exc:
        raise storage_unavailable(exc) from exc
    if size > limit:
        raise HTTPError(413, f"the input is larger than max_payload_bytes={limit}")
    if data is None:
        raise HTTPError(400, f"no object at InputLocation {location[:200]!r}")
    return data


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _submit(
    request: Request, api: str, data: bytes, content_type: str, inference_id: str, caller: Caller
) -> tuple[str, WorkloadState | None]:
    """Owe the copy, then submit: (workload id, the workload when it had finished already)."""
    engine = engine_of(request)
    workload_id = engine.new_id(api, inference_id, caller.key_id)
    try:
        await engine.copies.expect(api, workload_id, copy_target(engine.storage, api, workload_id))
    except Exception as exc:
        raise storage_unavailable(exc) from exc
    headers = {
        "content-type": content_type,
        "content-length": str(len(data)),
        "idempotency-key": inference_id,
    }
    try:
        answer = await submit_workload(
            engine, request.app.state.settings, api, headers, _once(data), caller
        )
    except BaseException:
        with contextlib.suppress(Exception):
            if await engine.get(api, workload_id) is None:  # not an earlier, accepted one
                await engine.copies.forget(api, workload_id)
        raise
    finished = await engine.get(api, workload_id) if answer.status == 200 else None
    return workload_id, finished


def add_routes(router: APIRouter) -> None:
    @router.post(
        "/endpoints/{api}/async-invocations",
        status_code=202,
        responses={
            202: {"model": AsyncInvocation, "description": "accepted and persisted"},
            **_ERRORS,
            **errors(422),
        },
    )
    async def invoke_endpoint_async(api: str, request: Request) -> Response:
        try:
            body = await request.body()
            if len(body) > MAX_REQUEST_BODY:
                raise HTTPError(413, "an async invocation carries its input in InputLocation")
            caller = sagemaker_caller(request, api, body)
            served_api(request, CONTRACT, api)
            location, content_type, inference_id = _options(request)
            data = await _read_input(request, api, location)
            inference_id = inference_id or uuid.uuid4().hex
            workload_id, finished = await _submit(
                request, api, data, content_type, inference_id, caller
            )
        except (HTTPError, EngineError) as exc:
            return _aws_error(exc)
        engine = engine_of(request)
        if finished is not None:
            engine.copies.finished(finished)  # a replay of one that ended: copied again
        target = copy_target(engine.storage, api, workload_id)
        output, failure = (
            url_of(engine.storage, target.output),
            url_of(engine.storage, target.failure),
        )
        return JSONResponse(
            {"InferenceId": inference_id, "OutputLocation": output},
            status_code=202,
            headers={
                "X-Amzn-SageMaker-OutputLocation": output,
                "X-Amzn-SageMaker-FailureLocation": failure,
                "Location": f"/{api}/{workload_id}",
            },
        )
