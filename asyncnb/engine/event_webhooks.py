"""Webhooks for a workload's events as it runs (`X-Webhook-Events`, or `webhook_events`).

Terminal events go as before (the durable outbox, engine._deliver). The others (start,
progress, output, log) are coalesced: at most one delivery per workload every
`WEBHOOK_COALESCE_S`, carrying every chosen event since the last one:

    {"type": "events", "id": "<workload>", "api": "echo", "events": [<event>, ...]}

Each delivery's `webhook-id` is `msg_<workload>_<first event id>`: unique per delivery, the
same on its retries. A workload's terminal webhook waits until its streamed deliveries are
done, so a receiver sees the events in order. These deliveries are best effort: a gateway
that stops loses the ones not yet sent (the terminal one is never lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..contract.events import DEFAULT_WEBHOOK_EVENTS, TERMINAL_TYPES, WEBHOOK_COALESCE_S
from .background import BackgroundTasks
from .delivery import WebhookSender
from .workload import WorkloadState

logger = logging.getLogger(__name__)

MAX_BUFFERED = 1000  # per workload: past it, the oldest buffered events are dropped (counted)

# (workload) → (its webhook URL, its secret), or None when it has no webhook
Destination = Callable[[WorkloadState], tuple[str, str] | None]


def chosen_events(workload: WorkloadState, api_default: list[str] | None) -> tuple[str, ...]:
    """The event types a workload's webhook gets: its own, else its API's, else terminal."""
    if workload.webhook_events is not None:
        return workload.webhook_events
    if api_default is not None:
        return tuple(api_default)
    return DEFAULT_WEBHOOK_EVENTS


@dataclass
class _Stream:
    url: str
    secret: str
    buffered: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    last_sent: float = 0.0
    sender: asyncio.Task[None] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class EventWebhooks:
    def __init__(
        self,
        sender: WebhookSender,
        tasks: BackgroundTasks,
        destination: Destination,
        api_default: Callable[[WorkloadState], list[str] | None],
        coalesce_s: float = WEBHOOK_COALESCE_S,
    ) -> None:
        self.sender = sender
        self.tasks = tasks
        self.destination = destination
        self.api_default = api_default
        self.coalesce_s = coalesce_s
        self._streams: dict[str, _Stream] = {}

    def wants_live(self, workload: WorkloadState) -> bool:
        """Whether the workload's webhook asked for events as they happen."""
        kinds = chosen_events(workload, self.api_default(workload))
        return any(kind not in TERMINAL_TYPES for kind in kinds) and (
            self.destination(workload) is not None
        )

    def on_event(self, workload: WorkloadState, event: dict[str, Any]) -> None:
        """An EventHub listener: buffer the event if the workload's webhook wants it."""
        kind = event["type"]
        if kind in TERMINAL_TYPES:
            return
        if kind not in chosen_events(workload, self.api_default(workload)):
            return
        stream = self._streams.get(workload.id)
        if stream is None:
            where = self.destination(workload)
            if where is None:
                return
            stream = self._streams[workload.id] = _Stream(*where)
            stream.idle.set()
        stream.buffered.append(event)
        if len(stream.buffered) > MAX_BUFFERED:
            del stream.buffered[0]
            stream.dropped += 1
        if stream.sender is None or stream.sender.done():
            stream.idle.clear()
            stream.sender = self.tasks.spawn(self._send(workload, stream))

    async def _send(self, workload: WorkloadState, stream: _Stream) -> None:
        try:
            while stream.buffered:
                wait = stream.last_sent + self.coalesce_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                batch, stream.buffered = stream.buffered, []
                dropped, stream.dropped = stream.dropped, 0
                body: dict[str, Any] = {
                    "type": "events",
                    "id": workload.id,
                    "api": workload.api,
                    "events": batch,
                }
                if dropped:
                    body["dropped"] = dropped
                stream.last_sent = time.monotonic()
                message_id = f"msg_{workload.id}_{batch[0]['event_id']}"
                outcome = await self.sender.deliver(stream.url, stream.secret, message_id, body)
                if not outcome.delivered:
                    logger.info("event webhook %s not delivered: %s", message_id, outcome.error)
        finally:
            stream.idle.set()

    async def drain(self, workload: WorkloadState, timeout_s: float = 30.0) -> None:
        """Before the terminal webhook: the streamed deliveries still due, sent (or given up)."""
        stream = self._streams.get(workload.id)
        if stream is None:
            return
        try:
            while stream.buffered or not stream.idle.is_set():
                if stream.buffered and (stream.sender is None or stream.sender.done()):
                    stream.idle.clear()
                    stream.sender = self.tasks.spawn(self._send(workload, stream))
                await asyncio.wait_for(stream.idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            logger.warning("event webhooks of %s still pending at its end", workload.id)
        finally:
            self._streams.pop(workload.id, None)
