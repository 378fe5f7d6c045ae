"""Harness ceiling: the AsyncAPI contract with no queue or worker behind it.

Run with: uvicorn bench.peers.noop_app:app --port P
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from fastapi import FastAPI

app = FastAPI(title="bench-noop")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Parse the body like the real targets do, so JSON decoding cost is on every side.
@app.post("/{api}", status_code=202)
async def submit(api: str, payload: dict[str, Any]) -> dict[str, str]:
    return {"id": uuid4().hex, "status": "in_queue"}


@app.get("/{api}/{workload_id}")
async def status(api: str, workload_id: str) -> dict[str, Any]:
    return {"id": workload_id, "status": "completed", "result": {}}
