"""The states a workload and an API go through, as the HTTP API spells them."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    # (no docstring: it would become the enum's description in /openapi.json)
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


class APIPhase(str, Enum):
    """An API's state: deploying until a worker has built its predictor, then ready (or error).

    `waiting_for_resources` is only ever shown: an API is in it while it is deploying or ready
    and no worker offers what it asks for, and none can be added.
    """

    DEPLOYING = "deploying"
    READY = "ready"
    ERROR = "error"
    WAITING_FOR_RESOURCES = "waiting_for_resources"
