"""What RunPod's serverless API answers, made from asyncnb's records (gateway/compat/runpod.py).

A job's status is RunPod's six: a workload that failed with a `Timeout` error (its API's
`timeout_s`) reads `TIMED_OUT`. Times are RunPod's: `delayTime` (queued until it started) and
`executionTime` (started until it finished), in whole milliseconds. The models document the
answers in the OpenAPI schema; the routes build the JSON themselves.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...contract.status import Status
from ...contract.tasks import ErrorRecord
from ...engine.api_state import APIState
from ...engine.webhook_formats import terminal_output
from ...engine.workload import WorkloadState

TIMEOUT_ERROR = "Timeout"  # the error type a predict past its API's timeout_s records


class RunpodJobStatus(str, Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


_STATUS = {
    Status.IN_QUEUE: RunpodJobStatus.IN_QUEUE,
    Status.IN_PROGRESS: RunpodJobStatus.IN_PROGRESS,
    Status.COMPLETED: RunpodJobStatus.COMPLETED,
    Status.FAILED: RunpodJobStatus.FAILED,
    Status.CANCELLED: RunpodJobStatus.CANCELLED,
}


def job_status(status: Status, error: ErrorRecord | None = None) -> RunpodJobStatus:
    if status is Status.FAILED and error is not None and error.get("type") == TIMEOUT_ERROR:
        return RunpodJobStatus.TIMED_OUT
    return _STATUS[status]


def _ms(start: float | None, end: float | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start) * 1000))


def job_record(workload: WorkloadState, owner: bool, output: Any = None) -> dict[str, Any]:
    """RunPod's status of `workload`; `output` is its result (when completed) as JSON. A
    caller who does not own it (a key with `read`) sees no output and only the error's type."""
    body: dict[str, Any] = {
        "id": workload.id,
        "status": job_status(workload.status, workload.error).value,
    }
    if (delay := _ms(workload.created_at, workload.started_at)) is not None:
        body["delayTime"] = delay
    if (execution := _ms(workload.started_at, workload.finished_at)) is not None:
        body["executionTime"] = execution
    if workload.status is Status.COMPLETED and owner:
        body["output"] = output
    if workload.error is not None:
        error = workload.error
        body["error"] = f"{error['type']}: {error['message']}" if owner else error["type"]
    return body


def health_record(state: APIState) -> dict[str, Any]:
    """RunPod's `health` from the API's counters. A workload handed to Dask but not started
    yet is still in the queue; a worker is running while it holds a started workload (at
    `max_concurrency` workloads a worker)."""
    started = sum(1 for w in state.running.values() if w.status is Status.IN_PROGRESS)
    per_worker = state.options.max_concurrency
    running = min(state.workers, -(-started // per_worker))
    return {
        "jobs": {
            "completed": state.counts["completed"],
            "failed": state.counts["failed"],
            "inProgress": started,
            "inQueue": len(state.queue) + len(state.running) - started,
            "retried": 0,
        },
        "workers": {"idle": max(0, state.workers - running), "running": running},
    }


# the answers, as the OpenAPI schema documents them -------------------------------------------
class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class RunpodJob(_Record):
    """A job's status: `{"id", "status"}`, its times once known, `output` once completed and
    `error` once failed."""

    id: str = Field(description="32 hex digits")
    status: RunpodJobStatus
    delayTime: int | None = Field(None, description="ms queued before it started")
    executionTime: int | None = Field(None, description="ms from its start to its end")
    output: Any = Field(None, description="when COMPLETED: the predictor's result")
    error: str | None = Field(None, description="when FAILED or TIMED_OUT: 'type: message'")


class RunpodStreamChunk(BaseModel):
    output: Any = Field(None, description="one output of a generator predictor")


class RunpodStream(_Record):
    """The outputs made since this job's last `stream` call (each is given once)."""

    status: RunpodJobStatus
    stream: list[RunpodStreamChunk]


class RunpodJobCounts(BaseModel):
    completed: int
    failed: int
    inProgress: int
    inQueue: int
    retried: int


class RunpodWorkerCounts(BaseModel):
    idle: int
    running: int


class RunpodHealth(_Record):
    jobs: RunpodJobCounts
    workers: RunpodWorkerCounts


class RunpodPurged(BaseModel):
    removed: int = Field(description="queued jobs cancelled")
    status: str = Field(description="completed")


JOB_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {"description": "the payload the predictor gets"},
        "webhook": {"type": "string", "description": "a per-job webhook (X-Webhook-URL)"},
        "policy": {
            "type": "object",
            "properties": {
                "executionTimeout": {
                    "type": "integer",
                    "description": "ms; accepted when the API's timeout_s is at most this",
                },
                "lowPriority": {"type": "boolean", "description": "true: X-Priority -1"},
                "ttl": {"type": "integer", "description": "not supported (422)"},
            },
        },
    },
}


async def webhook_job(
    workload: WorkloadState, event: dict[str, Any], chosen: dict[str, str]
) -> dict[str, Any]:
    """What RunPod POSTs to a job's webhook: its status body, output included (the webhook is
    the submitter's own), from asyncnb's terminal event (engine/webhook_formats.py)."""
    return job_record(workload, owner=True, output=terminal_output(workload, event))
