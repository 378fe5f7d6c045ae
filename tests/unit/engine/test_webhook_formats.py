"""Webhook bodies in a peer's shape (engine/webhook_formats.py), and the format kept with the
workload through its queue entry and its final record (a webhook owed across a restart)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asyncnb.contract.status import Status
from asyncnb.engine.webhook_formats import register_webhook_format, webhook_body
from asyncnb.engine.workload import WorkloadState


def workload(fmt: dict[str, str] | None) -> WorkloadState:
    return WorkloadState(
        "0" * 32,
        "echo",
        created_at=time.time(),
        content_type="application/json",
        webhook_url="https://example.org/hook",
        webhook_format=fmt,
    )


async def shouted(
    w: WorkloadState, event: dict[str, Any], chosen: dict[str, str]
) -> dict[str, Any]:
    return {"SHOUTED": event["status"].upper(), "base": chosen.get("base")}


async def broken(w: WorkloadState, event: dict[str, Any], chosen: dict[str, str]) -> dict[str, Any]:
    raise KeyError("no such field")


register_webhook_format("test-shouted", shouted)
register_webhook_format("test-broken", broken)


def test_a_registered_format_shapes_the_body_and_others_keep_asyncnbs_event() -> None:
    event = {"type": "completed", "status": "completed", "id": "0" * 32}
    formatted = asyncio.run(
        webhook_body(workload({"contract": "test-shouted", "base": "b"}), event)
    )
    assert formatted == {"SHOUTED": "COMPLETED", "base": "b"}
    assert asyncio.run(webhook_body(workload(None), event)) is event
    # an adapter turned off since the workload was submitted: asyncnb's own event
    assert asyncio.run(webhook_body(workload({"contract": "gone"}), event)) is event
    # a formatter that fails never loses the delivery: asyncnb's own event goes instead
    assert asyncio.run(webhook_body(workload({"contract": "test-broken"}), event)) is event


def test_the_format_survives_the_queue_entry_and_the_final_record() -> None:
    fmt = {"contract": "replicate", "predictions": "https://gw/compat/replicate/v1/predictions"}
    queued = WorkloadState.from_queue_entry(workload(fmt).queue_entry())
    assert queued.webhook_format == fmt
    assert WorkloadState.from_queue_entry(workload(None).queue_entry()).webhook_format is None
    queued.finished_at = time.time()
    record = queued.final_record(Status.COMPLETED)
    assert WorkloadState.from_final_record(record).webhook_format == fmt
    assert "webhook_format" not in queued.public()  # not part of the HTTP view
