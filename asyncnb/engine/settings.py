"""What the engine is tuned by. Its defaults are the gateway's (`GatewaySettings`), which the
`asyncnb serve` flags set, so no default is written twice."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..contract.settings import Durability, GatewaySettings, QueuePolicy
from ..contract.webhook_policy import WebhookPolicy


def _gateway_default(name: str) -> Any:
    return GatewaySettings.__dataclass_fields__[name].default


@dataclass
class EngineSettings:
    inline_payload_bytes: int = _gateway_default("inline_payload_bytes")
    inline_result_bytes: int = _gateway_default("inline_result_bytes")
    max_chunk: int = _gateway_default("max_chunk")
    prefetch: int = _gateway_default("prefetch")
    queue_policy: QueuePolicy = _gateway_default("queue_policy")  # noqa: RUF009 (a str)
    durability: Durability = _gateway_default("durability")  # noqa: RUF009 (a str)
    webhook_attempts: int = _gateway_default("webhook_attempts")
    webhook_backoff_s: float = _gateway_default("webhook_backoff_s")
    sweep_interval_s: float = _gateway_default("sweep_interval_s")
    autoscale_interval_s: float = _gateway_default("autoscale_interval_s")
    # a stalled object store (no answer, not refused) must cost a request seconds, not minutes
    storage_timeout_s: float = _gateway_default("storage_timeout_s")
    finished_cache: int = 100_000
    finished_cache_bytes: int = 256 * 1024 * 1024
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    min_workers: int = 0
    max_workers: int | None = None

    @classmethod
    def from_gateway(cls, settings: GatewaySettings, **chosen: Any) -> EngineSettings:
        """The engine's part of a gateway's settings; `chosen` sets the rest."""
        shared = {
            spec.name: getattr(settings, spec.name)
            for spec in fields(cls)
            if spec.name in GatewaySettings.__dataclass_fields__
            and spec.name not in chosen
            and spec.name not in ("min_workers", "max_workers")
        }
        return cls(**shared, **chosen)
