"""Webhook bodies in a peer's shape: the registry the contract adapters plug into.

A workload submitted through a peer's contract (gateway/compat/) can carry `webhook_format`,
`{"contract": <name>, ...what that adapter keeps}`. When its terminal webhook is delivered,
the formatter registered under that name turns asyncnb's event into the peer's body (a
Replicate prediction, a RunPod job status), so the peer's webhook handlers read it unchanged.
The signature (Standard Webhooks) is the same whatever the body. A name nobody registered in
this process (the adapter was turned off since) falls back to asyncnb's own event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..contract.status import Status
from .workload import WorkloadState

logger = logging.getLogger(__name__)

# (the workload, asyncnb's event for it, the workload's webhook_format) → the body to POST
WebhookFormatter = Callable[
    [WorkloadState, dict[str, Any], dict[str, str]], Awaitable[dict[str, Any]]
]

_formatters: dict[str, WebhookFormatter] = {}


def terminal_output(workload: WorkloadState, event: dict[str, Any]) -> Any:
    """What a formatter puts as the output: the result its terminal event carries inline,
    else where the native API serves it; None unless the workload completed."""
    if workload.status is not Status.COMPLETED:
        return None
    return event["result"] if "result" in event else {"result_url": event.get("result_url")}


def register_webhook_format(name: str, formatter: WebhookFormatter) -> None:
    _formatters[name] = formatter


def registered_formats() -> list[str]:
    return sorted(_formatters)


async def webhook_body(workload: WorkloadState, event: dict[str, Any]) -> dict[str, Any]:
    """The body of `workload`'s terminal webhook: `event`, or its peer's shape of it."""
    chosen = workload.webhook_format
    formatter = _formatters.get(chosen.get("contract", "")) if chosen else None
    if formatter is None or chosen is None:
        return event
    try:
        return await formatter(workload, event, chosen)
    except Exception:
        logger.exception("the %s webhook body of %s failed: sending asyncnb's", chosen, workload.id)
        return event
