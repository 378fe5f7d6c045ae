"""The stack users typically hand-build instead of asyncnb: FastAPI + Celery + Redis.

Web:    uvicorn bench.peers.celery_app:app --port P
Worker: celery -A bench.peers.celery_app:celery_app worker --concurrency 2
Both read the broker/backend URL from BENCH_REDIS_URL.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import uuid4

from celery import Celery
from celery.result import AsyncResult
from fastapi import FastAPI

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

celery_app = Celery("bench_celery", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    # Without this Celery never reports STARTED, so in_progress could not be exposed.
    task_track_started=True,
    # Results must outlive the benchmark run, not pile up for the default day.
    result_expires=600,
    broker_connection_retry_on_startup=True,
)

# Celery states that are not terminal map to the contract's queue/progress states.
_STATE_MAP: dict[str, str] = {
    "PENDING": "in_queue",
    "RECEIVED": "in_queue",
    "RETRY": "in_queue",
    "STARTED": "in_progress",
    "SUCCESS": "completed",
    "FAILURE": "failed",
    "REVOKED": "cancelled",
}


@celery_app.task(name="bench.predict")
def predict(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


app = FastAPI(title="bench-celery")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Sync routes on purpose: FastAPI runs them in its threadpool, which is how most users keep
# the blocking Redis calls of apply_async/AsyncResult off the event loop.
@app.post("/{api}", status_code=202)
def submit(api: str, payload: dict[str, Any]) -> dict[str, str]:
    workload_id = uuid4().hex
    # apply_async rather than delay() only to make the task id the contract's hex id.
    predict.apply_async(args=(payload,), task_id=workload_id)
    return {"id": workload_id, "status": "in_queue"}


@app.get("/{api}/{workload_id}")
def status(api: str, workload_id: str) -> dict[str, Any]:
    result = AsyncResult(workload_id, app=celery_app)
    state = result.state
    body: dict[str, Any] = {"id": workload_id, "status": _STATE_MAP.get(state, "in_queue")}
    if state == "SUCCESS":
        body["result"] = result.result
    elif state == "FAILURE":
        body["error"] = repr(result.result)
    return body
