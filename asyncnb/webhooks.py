"""Signed webhooks per Standard Webhooks, delivered with exponential-backoff retries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_exponential

from .webhook_policy import DEFAULT_POLICY, WebhookPolicy

logger = logging.getLogger("asyncnb.webhooks")


def generate_secret() -> str:
    """A new `whsec_`-prefixed secret, as Standard Webhooks defines it."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """Check a received webhook; what a receiver written in Python would call."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures)


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
        refused = await self.policy.delivery_problem(url)
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
