"""Per-API state held by the engine: spec, lifecycle state, queue and counters."""

from __future__ import annotations

import math
import time
from typing import Any

from .options import APIOptions
from .queue import WorkloadQueue
from .workload import Workload, isoformat


class APIState:
    DEPLOYING = "deploying"
    READY = "ready"
    ERROR = "error"

    def __init__(
        self,
        name: str,
        version: int,
        options: APIOptions,
        config: dict[str, Any] | None,
        webhook_secret: str,
        created_at: float | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.options = options
        self.config = config
        self.webhook_secret = webhook_secret
        self.created_at = created_at or time.time()
        self.updated_at = time.time()
        self.state = self.DEPLOYING
        self.error: dict[str, Any] | None = None
        self.queue = WorkloadQueue()
        self.running: dict[str, Workload] = {}
        self.chunks_in_flight = 0
        self.workers = 0
        self.desired_workers = options.min_replicas
        self.counts = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0}
        self.warm_future: Any = None

    def spec_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "options": self.options.model_dump(),
            "config": self.config,
            "webhook_secret": self.webhook_secret,
            "created_at": self.created_at,
        }

    @property
    def in_progress(self) -> int:
        return len(self.running)

    @property
    def in_flight(self) -> int:
        return len(self.queue) + len(self.running)

    def recommend_workers(self) -> int:
        """Replicas for the load right now: ceil(in-flight / target_in_flight), clamped.

        The deploy options' window, tolerances, factors and stabilization periods are
        validated but not acted on yet: no autoscaler changes the cluster size so far.
        """
        raw = math.ceil(self.in_flight / self.options.effective_target_in_flight)
        return max(self.options.min_replicas, min(self.options.max_replicas, raw))

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue_depth": len(self.queue),
            "in_progress": self.in_progress,
            "workers": self.workers,
            "desired_workers": self.desired_workers,
            **self.counts,
        }

    def public(self, base_url: str = "") -> dict[str, Any]:
        view: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "endpoint": f"{base_url}/{self.name}",
            "queue_depth": len(self.queue),
            "in_progress": self.in_progress,
            "completed": self.counts["completed"],
            "failed": self.counts["failed"],
            "cancelled": self.counts["cancelled"],
            "submitted": self.counts["submitted"],
            "workers": self.workers,
            "desired_workers": self.desired_workers,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "options": {**self.options.public(), "webhook_secret": "***"},
        }
        if self.error is not None:
            view["error"] = self.error
        return view
