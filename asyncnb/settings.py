"""Settings of one gateway process (what `asyncnb serve` takes on its command line)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .storage import default_storage_url


@dataclass
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8765
    storage: str = field(default_factory=default_storage_url)
    storage_options: dict[str, Any] = field(default_factory=dict)
    scheduler: str | None = None
    cluster: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    worker_resources: dict[str, float] = field(default_factory=dict)
    token: str | None = field(default_factory=lambda: os.environ.get("ASYNCNB_TOKEN") or None)
    admin_token: str | None = field(
        default_factory=lambda: os.environ.get("ASYNCNB_ADMIN_TOKEN") or None
    )
    public_url: str | None = None
    inline_payload_bytes: int = 1024 * 1024
    inline_result_bytes: int = 1024 * 1024
    max_chunk: int = 64
    prefetch: int = 1
    webhook_attempts: int = 6
    webhook_backoff_s: float = 1.0
    sweep_interval_s: float = 3600.0
    max_deploy_bytes: int = 512 * 1024 * 1024
    autoscale_interval_s: float = 10.0
    webhook_allow: tuple[str, ...] = ()
    webhook_deny: tuple[str, ...] = ()
    body_timeout_s: float = 60.0
    storage_timeout_s: float = 10.0
    min_workers: int | None = None  # default: the LocalCluster's size, or 0 for --cluster
    max_workers: int | None = None  # default: the LocalCluster's size, unbounded for --cluster

    @property
    def effective_admin_token(self) -> str | None:
        return self.admin_token or self.token


def parse_resources(text: str | None) -> dict[str, float]:
    """`GPU=1,MEMORY=4e9` → {"GPU": 1.0, "MEMORY": 4e9}."""
    resources: dict[str, float] = {}
    for part in (text or "").replace(" ", ",").split(","):
        if not part:
            continue
        name, sep, amount = part.partition("=")
        if not sep or not name:
            raise ValueError(f"resource {part!r} is not NAME=AMOUNT")
        try:
            resources[name] = float(amount)
        except ValueError:
            raise ValueError(f"resource {part!r}: {amount!r} is not a number") from None
    return resources
