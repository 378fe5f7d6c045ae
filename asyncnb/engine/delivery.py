"""Webhook delivery: signed POSTs (Standard Webhooks) with exponential-backoff retries, to
destinations the gateway's policy allows, checked again with every address DNS gives now."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_exponential

from ..contract.webhook_policy import DEFAULT_POLICY, WebhookPolicy, as_address, host_of
from ..webhooks import sign

logger = logging.getLogger(__name__)


async def delivery_problem(policy: WebhookPolicy, url: str) -> str | None:
    """`policy.problem(url)`, plus every address the host name resolves to right now."""
    problem = policy.problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    host = host_of(url)
    if as_address(host) is not None:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80)
        )
    except OSError as exc:
        return f"cannot resolve webhook host {host!r}: {exc}"
    return policy.resolved_problem(host, [str(info[4][0]) for info in infos])


class DeliveryFailed(Exception):
    pass


@dataclass
class DeliveryOutcome:
    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None

    def public(self, url: str) -> dict[str, Any]:
        return {
            "url": url,
            "status": "delivered" if self.delivered else "failed",
            "attempts": self.attempts,
            "last_status_code": self.status_code,
            "last_error": self.error,
        }


class WebhookSender:
    """POSTs events; never raises, and retries on transport errors and non-2xx answers."""

    def __init__(
        self,
        attempts: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        policy: WebhookPolicy = DEFAULT_POLICY,
        max_concurrent_posts: int = 32,
    ) -> None:
        self.policy = policy
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        # httpx's pool spends O(waiters) CPU per released connection, so a thousand deliveries
        # retrying at once would stall the event loop; they queue here instead
        self._posting = asyncio.Semaphore(max_concurrent_posts)

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(
        self, url: str, secret: str, message_id: str, event: dict[str, Any]
    ) -> DeliveryOutcome:
        refused = await delivery_problem(self.policy, url)
        if refused:
            logger.warning("webhook %s not sent: %s", message_id, refused)
            return DeliveryOutcome(False, 0, None, refused)
        body = json.dumps(event, separators=(",", ":")).encode()
        tries = 0
        last_code: int | None = None
        last_error: str | None = None
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
                reraise=False,
            ):
                with attempt:
                    tries += 1
                    async with self._posting:
                        last_code, last_error = await self._post(url, secret, message_id, body)
                    if last_error is not None:
                        raise DeliveryFailed(last_error)
        except RetryError:
            logger.warning("webhook %s to %s failed after %d attempts", message_id, url, tries)
            return DeliveryOutcome(False, tries, last_code, last_error)
        return DeliveryOutcome(True, tries, last_code, None)

    async def _post(
        self, url: str, secret: str, message_id: str, body: bytes
    ) -> tuple[int | None, str | None]:
        """(status code, error or None); signed now, so a delivery that queued is not stale."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
            "user-agent": "asyncnb-webhooks",
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if not 200 <= response.status_code < 300:
            return response.status_code, f"HTTP {response.status_code}"
        return response.status_code, None
