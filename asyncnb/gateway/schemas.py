"""What the gateway answers, as pydantic models for its OpenAPI schema (`/openapi.json`).

The routes build their JSON themselves (`WorkloadState.public()`, `APIState.public()`, the ASGI
fast path): these models only *document* it, through `responses=` on the route decorators,
and are never used to serialize. Records allow extra fields, so that adding a field to a
record does not make the schema lie. `tests/system/test_fuzz.py` checks the schema against a real
gateway with schemathesis.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..contract.status import Status

Responses = dict[int | str, dict[str, Any]]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


# errors ---------------------------------------------------------------------------------
class Error(BaseModel):
    """Every error but a validation error: `{"detail": "<what went wrong>"}`."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: for example ['body', 'options', 'gpu']")
    msg: str
    type: str


class ValidationFailed(BaseModel):
    """A `422`: a list of issues when the request does not match its declared parameters or
    body, a string for the gateway's own checks (`X-Priority`, `X-Webhook-URL`,
    `Idempotency-Key`, a predictor that is not base64 or is empty, a notebook format)."""

    detail: str | list[ValidationIssue]


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait: 5", "schema": {"type": "string"}}}
_KEY_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}

_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("Bad request: invalid workload id, invalid or reserved API name on deploy, or a "
          "body that is not valid JSON or text in its charset", {}),
    401: ("Missing or malformed `Authorization: Bearer <token>` header, or an API key that "
          "is unknown, revoked or expired", _WWW_AUTHENTICATE),
    403: ("Invalid token, a user token on an admin route, or an API key asking for more than "
          "it grants (another API, a scope it lacks, another caller's workload)", {}),
    404: ("API not deployed (or an invalid or reserved name), workload unknown or expired, "
          "or its result or notebook not there", {}),
    408: ("The client paused longer than the body timeout while sending the body; nothing "
          "was queued", {}),
    409: ("The workload is not in a state that allows this (already finished, or not "
          "completed)", {}),
    413: ("Body larger than the API's `max_payload_bytes`, or a deploy body larger than "
          "`max_deploy_bytes`", {}),
    422: ("Validation failed: `detail` is a list of issues, or a string for the gateway's "
          "own checks", {}),
    429: ("An API key past its `rate_limit` (`Retry-After` says when to retry) or its "
          "`max_queued` unfinished workloads (`detail` names the limit)", _KEY_RETRY_AFTER),
    503: ("Storage unavailable, or the API is in state `error`; retry later", _RETRY_AFTER),
}  # fmt: skip


def errors(*codes: int) -> Responses:
    """The `responses=` entries of these error status codes."""
    documented: Responses = {}
    for code in codes:
        description, headers = _ERRORS[code]
        entry: dict[str, Any] = {
            "model": ValidationFailed if code == 422 else Error,
            "description": description,
        }
        if headers:
            entry["headers"] = headers
        documented[code] = entry
    return documented


def ok(model: type[BaseModel], description: str, code: int = 200) -> Responses:
    return {code: {"model": model, "description": description}}


def content(description: str, media: dict[str, dict[str, Any]], code: int = 200) -> Responses:
    """A success answer that is not JSON: `media` maps media types to their schemas."""
    return {code: {"description": description, "content": media}}


RESULT_MEDIA: dict[str, dict[str, Any]] = {
    "application/json": {"schema": {}},
    "text/plain": {"schema": {"type": "string"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}
NOTEBOOK_MEDIA: dict[str, dict[str, Any]] = {
    "application/x-ipynb+json": {"schema": {"type": "object"}},
    "text/html": {"schema": {"type": "string"}},
}


# workloads ------------------------------------------------------------------------------
class Progress(_Record):
    fraction: float | None = Field(None, description="0..1")
    message: str | None = None


class RemoteError(_Record):
    """Why a workload failed, or why an API could not start."""

    type: str = Field(description="exception class, Timeout, PredictorInitError, WorkerLost...")
    message: str | None = Field(None, description="absent from another caller's workload")
    traceback: str | None = None


class WebhookState(_Record):
    url: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int = 0
    last_status_class: str | None = Field(None, description="2xx, 3xx, 4xx or 5xx")
    last_error: str | None = Field(
        None, description="a short reason: timed out, connection failed, HTTP 5xx, a refusal"
    )


class WorkloadRecord(_Record):
    """A workload's status record (`WorkloadState.public()`)."""

    id: str = Field(description="32 hex digits")
    api: str
    status: Status
    attempts: int
    priority: int
    submitted_by: str = Field(description="the name of the API key it came with, or 'owner'")
    created_at: str | None = Field(description="ISO 8601, UTC")
    started_at: str | None
    finished_at: str | None
    version: int | None = Field(None, description="the API version it was dispatched to")
    progress: Progress | None = None
    result_content_type: str | None = Field(None, description="when completed")
    result_size: int | None = Field(None, description="when completed")
    result_url: str | None = Field(None, description="when completed: /{api}/{id}/result")
    result: Any = Field(None, description="when completed, for JSON and text results kept inline")
    error: RemoteError | None = Field(None, description="when failed")
    webhook: WebhookState | None = None


class Accepted(_Record):
    """`202`: `{"id", "status"}`; an idempotent replay answers the full status record."""

    id: str = Field(description="32 hex digits")
    status: Status


class WorkloadList(BaseModel):
    workloads: list[WorkloadRecord] = Field(description="newest first")


# APIs ---------------------------------------------------------------------------------------
class ScalingEvent(_Record):
    time: str | None
    from_: int = Field(alias="from")
    to: int
    reason: str


class FinishStats(_Record):
    """Throughput and latency of the workloads that completed or failed recently
    (cancellations do not count), from the last 10,000 such finishes at most."""

    window_s: float = Field(
        description="seconds covered: 60, or fewer when more than 10,000 finished in 60 s"
    )
    finished: int = Field(description="completed + failed within the window")
    completed: int
    failed: int
    completed_per_s: float = Field(description="completed / window_s")
    latency_p50_s: float | None = Field(
        description="median end-to-end latency (finished_at - created_at) of the finished "
        "ones; null when none finished"
    )
    latency_p95_s: float | None = Field(description="95th percentile of the same")


class SubmitterRecord(_Record):
    submitted_by: str = Field(description="a key's name, 'owner', or '(others)' past 50")
    submitted: int
    completed: int
    failed: int
    cancelled: int
    unfinished: int


class APIRecord(_Record):
    """An API's status record (`APIState.public()`)."""

    name: str
    version: int
    state: Literal["deploying", "ready", "error", "waiting_for_resources"]
    endpoint: str
    queue_depth: int
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    submitted: int
    workers: int
    desired_workers: int
    created_at: str | None
    updated_at: str | None
    scaling_events: list[ScalingEvent]
    options: dict[str, Any] = Field(description="the deploy options; webhook_secret is '***'")
    stats: FinishStats = Field(description="throughput and latency over the last minute")
    error: RemoteError | None = Field(None, description="when state is error")
    waiting_for: str | None = Field(None, description="when state is waiting_for_resources")
    submitters: list[SubmitterRecord] = Field(
        default_factory=list, description="who submitted to it, busiest first (50 at most)"
    )


class DeployedAPI(APIRecord):
    """The API record, plus the webhook signing secret in clear (shown only here)."""

    webhook_secret: str


class APIList(BaseModel):
    apis: list[APIRecord]


class Undeployed(BaseModel):
    name: str
    deleted: Literal[True]


class Health(BaseModel):
    status: Literal["ok"]
    version: str


# keys -----------------------------------------------------------------------------------
class KeyRecord(_Record):
    """An API key as `GET /keys` lists it: never its secret."""

    id: str = Field(description="16 hex digits; `DELETE /keys/{id}` revokes it")
    name: str = Field(description="who it is for; what its workloads show as `submitted_by`")
    prefix: str = Field(description="the start of the key, `ank_<id>_`, to recognise it")
    apis: list[str] = Field(description="the APIs it may call; ['*'] for all")
    scopes: list[Literal["invoke", "read"]]
    state: Literal["active", "expired", "revoked"]
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    rate_limit: float | None = Field(description="requests/s, or null for no limit")
    burst: int | None
    max_queued: int | None = Field(description="its unfinished workloads, at most")


class CreatedKey(KeyRecord):
    """The new key, with its full text: shown here once, and never again."""

    key: str = Field(description="`ank_<id>_<secret>`; send as `Authorization: Bearer <key>`")


class KeyList(BaseModel):
    keys: list[KeyRecord] = Field(description="oldest first, revoked and expired included")
