"""Per-API state held by the engine: spec, lifecycle state, queue, counters and recent
throughput and latency."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..contract.options import APIOptions
from ..contract.settings import QueuePolicy
from ..contract.status import APIPhase
from ..contract.tasks import ErrorRecord
from ..contract.timestamps import isoformat
from .attribution import SubmitterCounts
from .autoscaler import Autoscaler
from .queue import WorkloadQueue, make_queue
from .stats import RecentFinishes
from .workload import WorkloadState


class APIState:
    def __init__(
        self,
        name: str,
        version: int,
        options: APIOptions,
        config: dict[str, Any] | None,
        webhook_secret: str,
        created_at: float | None = None,
        queue_policy: QueuePolicy = "fair",
    ) -> None:
        self.name = name
        self.version = version
        self.options = options
        self.config = config
        self.webhook_secret = webhook_secret
        self.created_at = created_at or time.time()
        self.updated_at = time.time()
        self.state = APIPhase.DEPLOYING
        self.error: ErrorRecord | None = None
        self.queue: WorkloadQueue = make_queue(queue_policy)
        self.running: dict[str, WorkloadState] = {}
        self.chunks_in_flight = 0
        self.workers = 0
        self.counts = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0}
        self.submitters = SubmitterCounts()
        self.blocked: str | None = None  # why no worker can run it, when none can
        self.scaling_events: deque[dict[str, Any]] = deque(maxlen=20)
        self.scaling_event_count = 0
        self.finishes = RecentFinishes()  # completed and failed workloads, for `stats`
        self.reset_autoscaler()

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

    def reset_autoscaler(self) -> None:
        self.autoscaler = Autoscaler(self.options, time.time())
        initial = self.options.init_replicas
        self.desired_workers = self.options.min_replicas if initial is None else initial

    def record_scaling(self, now: float, before: int, after: int, reason: str) -> None:
        self.scaling_events.append(
            {"time": isoformat(now), "from": before, "to": after, "reason": reason}
        )
        self.scaling_event_count += 1

    @property
    def shown_state(self) -> APIPhase:
        if self.blocked and self.state is not APIPhase.ERROR:
            return APIPhase.WAITING_FOR_RESOURCES
        return self.state

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue_depth": len(self.queue),
            "in_progress": self.in_progress,
            "workers": self.workers,
            "desired_workers": self.desired_workers,
            "scaling_events": self.scaling_event_count,
            "submitters": self.submitters.rows(),
            **self.counts,
        }

    def public(self, base_url: str = "") -> dict[str, Any]:
        view: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "state": self.shown_state.value,
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
            "scaling_events": list(self.scaling_events)[-10:],
            "options": {**self.options.public(), "webhook_secret": "***"},
            "stats": self.finishes.summary(time.time()),
            "submitters": self.submitters.public(),
        }
        if self.error is not None:
            view["error"] = self.error
        if self.blocked and self.state is not APIPhase.ERROR:
            view["waiting_for"] = self.blocked
        return view
