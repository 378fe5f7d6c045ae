"""What Replicate's contract answers and takes, as pydantic models for the OpenAPI schema.

Like gateway/schemas.py they only document: the routes build their JSON themselves
(replicate_prediction.py). Records allow extra fields, so that a field added later does not
make the schema lie.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ReplicateStatus = Literal["starting", "processing", "succeeded", "failed", "canceled"]
WebhookEvent = Literal["start", "output", "logs", "completed"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class PredictionURLs(_Record):
    get: str
    cancel: str


class Prediction(_Record):
    """A prediction, as Replicate's HTTP API v1 spells one."""

    id: str = Field(description="`<api>-<workload id>`")
    model: str = Field(description="`asyncnb/<api>`")
    version: str = Field(description="`<api>:<version>` (the API version that ran it)")
    status: ReplicateStatus
    input: dict[str, Any] | None
    output: Any = None
    error: str | None
    logs: str | None
    metrics: dict[str, float]
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    urls: PredictionURLs


class PredictionPage(_Record):
    next: str | None
    previous: str | None
    results: list[Prediction]


class WebhookSecret(_Record):
    key: str = Field(description="the API's `whsec_` webhook secret")


class PredictionRequest(BaseModel):
    """The body of a create: `input` is the workload's JSON payload."""

    model_config = ConfigDict(extra="allow")

    version: str | None = Field(
        None,
        description="`<api>` or `<api>:<version>` (also `<owner>/<api>[:<version>]`); "
        "only on `POST /v1/predictions`",
    )
    input: dict[str, Any]
    webhook: str | None = None
    webhook_completed: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    stream: bool | None = None


REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
    }
}
