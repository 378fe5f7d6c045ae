"""Webhooks for streamed events: which types, coalescing, ids, and the terminal one last."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asyncnb.contract.events import parse_event_types
from asyncnb.contract.options import APIOptions
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.engine.delivery import DeliveryOutcome
from asyncnb.engine.event_webhooks import EventWebhooks, chosen_events

from .harness import asynctest, deploy, engine, new_workload, until


class RecordingSender:
    """Stands in for WebhookSender.deliver: records (message id, body)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def deliver(
        self, url: str, secret: str, message_id: str, event: dict[str, Any]
    ) -> DeliveryOutcome:
        self.sent.append((message_id, event))
        return DeliveryOutcome(True, 1, 200, None)

    async def close(self) -> None:
        pass


def test_event_types_parse_and_refuse_unknown_ones() -> None:
    assert parse_event_types("output, completed,LOG") == ("output", "log", "completed")
    with pytest.raises(ValueError, match=r"unknown event type.*bogus"):
        parse_event_types("output,bogus")
    with pytest.raises(ValueError, match="at least one"):
        parse_event_types(" , ")
    with pytest.raises(ValueError, match="webhook_events"):
        APIOptions(webhook_events=["nope"])
    assert APIOptions(webhook_events=["log", "start"]).webhook_events == ["start", "log"]


def test_chosen_events_workload_then_api_then_terminal() -> None:
    workload = new_workload("api")
    assert chosen_events(workload, None) == ("completed", "failed", "cancelled")
    assert chosen_events(workload, ["output"]) == ("output",)
    workload.webhook_events = ("log",)
    assert chosen_events(workload, ["output"]) == ("log",)


@asynctest
async def test_streamed_events_are_coalesced_and_the_end_comes_last() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    sender = RecordingSender()
    eng.webhooks = sender  # type: ignore[assignment]
    eng.event_webhooks.sender = sender  # type: ignore[assignment]
    await eng.start()
    try:
        state = await deploy(eng, webhook_url="https://hooks.example/x")
        workload = new_workload(state.name, webhook_events=("output", "log", "completed"))
        await eng.accept(state, workload)
        task = await until(lambda: backend.pending()[0] if backend.pending() else None)
        task.start()  # not chosen: not sent
        for n in range(40):
            task.stream([{"index": n, "value": n, "encoding": "json"}])
        task.stream([{"type": "log", "line": "a line", "stream": "stdout"}])
        await asyncio.sleep(0.05)
        task.stream([{"index": 40, "value": 40, "encoding": "json"}])
        task.succeed(b"[]")
        await until(lambda: any(body["type"] == "completed" for _, body in sender.sent))
    finally:
        await eng.close()
    streamed = [(mid, body) for mid, body in sender.sent if body["type"] == "events"]
    # 42 events within 50 ms: two deliveries at most (one at once, one 500 ms later)
    assert 1 <= len(streamed) <= 2, [len(b["events"]) for _, b in streamed]
    events = [e for _, body in streamed for e in body["events"]]
    assert [e["type"] for e in events] == ["output"] * 40 + ["log", "output"]
    assert [e["event_id"] for e in events] == sorted({e["event_id"] for e in events})
    # unique ids per delivery, named after their first event; the terminal keeps msg_<id>
    assert [mid for mid, _ in streamed] == [
        f"msg_{workload.id}_{body['events'][0]['event_id']}" for _, body in streamed
    ]
    assert sender.sent[-1][0] == f"msg_{workload.id}"
    assert sender.sent[-1][1]["type"] == "completed"


@asynctest
async def test_the_default_sends_only_the_end_and_a_filter_can_leave_it_out() -> None:
    backend = FakeBackend(1)
    eng = engine(backend)
    sender = RecordingSender()
    eng.webhooks = sender  # type: ignore[assignment]
    eng.event_webhooks.sender = sender  # type: ignore[assignment]
    await eng.start()
    try:
        state = await deploy(eng, webhook_url="https://hooks.example/x")
        plain = await eng.accept(state, new_workload(state.name))
        task = await until(lambda: backend.pending()[0] if backend.pending() else None)
        task.start()
        task.stream([{"index": 0, "value": 1, "encoding": "json"}])
        task.succeed(b"[1]")
        await until(lambda: len(sender.sent) == 1)
        only_outputs = await eng.accept(state, new_workload(state.name, webhook_events=("output",)))
        task = await until(lambda: backend.pending()[0] if backend.pending() else None)
        task.start()
        task.stream([{"index": 0, "value": 2, "encoding": "json"}])
        task.succeed(b"[2]")
        await until(lambda: only_outputs.status.finished)
        await asyncio.sleep(0.1)
    finally:
        await eng.close()
    assert [(mid, body["type"]) for mid, body in sender.sent] == [
        (f"msg_{plain.id}", "completed"),
        (f"msg_{only_outputs.id}_2", "events"),
    ]
    assert only_outputs.webhook is None  # no terminal webhook was owed


def test_event_webhooks_bound_what_they_buffer() -> None:
    async def scenario() -> None:
        hooks = EventWebhooks(
            RecordingSender(),  # type: ignore[arg-type]
            _tasks(),
            lambda w: ("https://hooks.example/x", "whsec_x"),
            lambda w: ["output"],
            coalesce_s=10.0,
        )
        workload = new_workload("api")
        for n in range(1500):
            hooks.on_event(workload, {"type": "output", "event_id": n + 1})
        stream = hooks._streams[workload.id]
        assert len(stream.buffered) <= 1000

    asyncio.run(scenario())


def _tasks() -> Any:
    from asyncnb.engine.background import BackgroundTasks

    return BackgroundTasks()
