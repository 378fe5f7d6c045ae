"""Deploy options of an API, validated with pydantic (Cortex's autoscaling defaults)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from dask.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_RESULT_TTL_S = 7 * 24 * 3600.0
EXAMPLE_MAX_BYTES = 64 * 1024

# The options a running API may change without a new version (`PATCH /apis/{api}`).
SCALING_OPTIONS = (
    "min_replicas",
    "max_replicas",
    "init_replicas",
    "target_in_flight",
    "window",
    "upscale_stabilization_period",
    "downscale_stabilization_period",
    "max_upscale_factor",
    "max_downscale_factor",
    "upscale_tolerance",
    "downscale_tolerance",
)


class APIOptions(BaseModel):
    """Everything a deploy may set; unknown fields are refused so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")

    gpu: float = Field(0, ge=0, le=64, description="GPUs per task (Dask resource 'GPU')")
    cpu: float | None = Field(None, gt=0, le=1024, description="Dask resource 'CPU' per task")
    mem: int | None = Field(None, gt=0, description="Dask resource 'MEMORY' in bytes ('4GiB' ok)")
    max_concurrency: int = Field(1, ge=1, le=1000, description="workloads at once per worker")
    max_batch_size: int = Field(1, ge=1, le=10_000, description="items per predict_batch call")
    batch_wait_ms: float = Field(0, ge=0, le=60_000, description="wait to fill a model batch")
    timeout_s: float | None = Field(None, gt=0, le=7 * 24 * 3600, description="per predict call")
    max_retries: int = Field(0, ge=0, le=20, description="retries after a predictor exception")
    retry_backoff_s: float = Field(1.0, ge=0, le=3600, description="first retry delay, doubled")
    webhook_url: str | None = Field(None, description="POSTed on completed/failed/cancelled")
    webhook_secret: str | None = Field(None, description="whsec_ base64 secret; generated if unset")
    webhook_events: list[str] | None = Field(
        None,
        description="event types POSTed to the webhook (start, progress, output, log, "
        "completed, failed, cancelled); unset: the terminal ones. X-Webhook-Events overrides",
    )
    result_ttl: float = Field(DEFAULT_RESULT_TTL_S, gt=0, description="seconds results are kept")
    max_payload_bytes: int = Field(2 * 1024**3, gt=0, description="larger bodies get 413")
    min_replicas: int = Field(1, ge=0, le=10_000)
    max_replicas: int = Field(100, ge=1, le=10_000)
    init_replicas: int | None = Field(None, ge=0, le=10_000)
    target_in_flight: float | None = Field(None, gt=0)
    window: float = Field(60, gt=0, le=24 * 3600)
    upscale_stabilization_period: float = Field(60, ge=0, le=24 * 3600)
    downscale_stabilization_period: float = Field(300, ge=0, le=24 * 3600)
    max_upscale_factor: float = Field(1.5, gt=1, le=100)
    max_downscale_factor: float = Field(0.75, gt=0, lt=1)
    upscale_tolerance: float = Field(0.05, ge=0, le=1)
    downscale_tolerance: float = Field(0.05, ge=0, le=1)
    example: Any = Field(
        None, description="an example payload (JSON, up to 64 KiB), shown in curl lines"
    )
    compat: list[str] | None = Field(
        None,
        description="the peers' contracts (see docs/compat.md) this API is served by under "
        "/compat/, of those the gateway serves; unset: all; []: none",
    )

    @field_validator("mem", mode="before")
    @classmethod
    def _parse_mem(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_bytes(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"not a size: {value!r}") from exc
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if value is not None:
            from .webhook_policy import webhook_url_problem

            problem = webhook_url_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("webhook_events")
    @classmethod
    def _check_webhook_events(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        from .events import parse_event_types

        return list(parse_event_types(value, what="webhook_events"))

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("whsec_"):
            raise ValueError("must start with 'whsec_' followed by base64 (Standard Webhooks)")
        try:
            key = base64.b64decode(value[len("whsec_") :], validate=True)
        except ValueError as exc:
            raise ValueError("the part after 'whsec_' is not valid base64") from exc
        if not 24 <= len(key) <= 64:
            raise ValueError("the secret must decode to 24-64 bytes")
        return value

    @field_validator("compat")
    @classmethod
    def _check_compat(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        from .compat import compat_problem

        if value == ["none"] or (problem := compat_problem(value, "compat")) is None:
            return [] if value == ["none"] else list(dict.fromkeys(value))
        raise ValueError(problem)

    @field_validator("example")
    @classmethod
    def _check_example(cls, value: Any) -> Any:
        if value is None:
            return value
        try:
            size = len(json.dumps(value, allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be a JSON value: {exc}") from exc
        if size > EXAMPLE_MAX_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {EXAMPLE_MAX_BYTES} allowed")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> APIOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        if self.init_replicas is not None and not (
            self.min_replicas <= self.init_replicas <= self.max_replicas
        ):
            raise ValueError("init_replicas must lie within [min_replicas, max_replicas]")
        return self

    @property
    def effective_target_in_flight(self) -> float:
        return self.target_in_flight or float(self.max_concurrency)

    def dask_resources(self) -> dict[str, float]:
        resources: dict[str, float] = {}
        if self.gpu:
            resources["GPU"] = self.gpu
        if self.cpu:
            resources["CPU"] = self.cpu
        if self.mem:
            resources["MEMORY"] = float(self.mem)
        return resources

    def public(self) -> dict[str, Any]:
        """The options as shown to API users: the webhook secret never leaves the gateway."""
        shown = self.model_dump()
        shown["webhook_secret"] = "***" if self.webhook_secret else None
        return shown

    def with_scaling(self, changes: Mapping[str, Any]) -> APIOptions:
        """These options with some scaling options changed, validated as a deploy's are
        (`ValidationError`; `ValueError` for an option that is not a scaling option)."""
        others = sorted(set(changes) - set(SCALING_OPTIONS))
        if others:
            raise ValueError(
                f"not a scaling option: {', '.join(others)} (a new version is deployed with "
                f"PUT /apis/{{api}}); scaling options: {', '.join(SCALING_OPTIONS)}"
            )
        return APIOptions.model_validate({**self.model_dump(), **changes})


def option_flags() -> list[tuple[str, str, str | None]]:
    """(flag, option, help) of every deploy option: the flags of `asyncnb deploy` and of the
    `%%async_api` magics, so neither can lag behind APIOptions."""
    return [
        (f"--{name.replace('_', '-')}", name, field.description)
        for name, field in APIOptions.model_fields.items()
    ]


def parse_option_value(text: str) -> Any:
    """An option given as text on a command line: JSON where it parses (numbers, lists,
    null...), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def chosen_options(given: Mapping[str, str | None]) -> dict[str, Any]:
    """The deploy options a command line set (None: not given), parsed."""
    return {
        name: parse_option_value(text)
        for name, text in given.items()
        if name in APIOptions.model_fields and text is not None
    }
