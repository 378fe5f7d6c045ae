"""Webhook delivery: signed POSTs (Standard Webhooks) with exponential-backoff retries, to
destinations the gateway's policy allows, checked again with every address DNS gives now."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_exponential

from ..contract.webhook_policy import DEFAULT_POLICY, WebhookPolicy, as_address, host_of
from ..webhooks import sign

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where one delivery attempt connects: the address that was checked, never a second
    lookup of the name (which DNS could answer differently: rebinding)."""

    url: str  # the webhook URL with the checked address as its host
    host: str | None = None  # the Host header of a URL that named a host
    sni: str | None = None  # the name TLS verifies, for https


async def resolve(policy: WebhookPolicy, url: str) -> Target | str:
    """The target of one attempt, or why the policy refuses it (checked with every address
    the host name resolves to now)."""
    problem = policy.problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    host = host_of(url)
    if as_address(host) is not None:
        return Target(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return f"cannot resolve webhook host {host!r}"
    addresses = [str(info[4][0]).split("%")[0] for info in infos]
    problem = policy.resolved_problem(host, addresses)
    if problem:
        return problem
    pinned = httpx.URL(url).copy_with(host=addresses[0])
    shown = host if parts.port is None else f"{host}:{parts.port}"
    return Target(str(pinned), host=shown, sni=host if parts.scheme == "https" else None)


async def delivery_problem(policy: WebhookPolicy, url: str) -> str | None:
    """Why `url` may not be called now (its host resolved and checked), or None."""
    target = await resolve(policy, url)
    return target if isinstance(target, str) else None


def status_class(code: int | None) -> str | None:
    return None if code is None else f"{code // 100}xx"


def _reason(exc: httpx.HTTPError) -> str:
    """A short reason: raw connection errors would make the record a port scanner."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.LocalProtocolError)):
        return "the receiver's answer was not HTTP"
    return "request failed"


class DeliveryFailed(Exception):
    pass


@dataclass
class DeliveryOutcome:
    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None

    def public(self, url: str) -> dict[str, Any]:
        """What the workload's record shows: a status class and a short reason, no more."""
        return {
            "url": url,
            "status": "delivered" if self.delivered else "failed",
            "attempts": self.attempts,
            "last_status_class": status_class(self.status_code),
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
        refusal: list[str] = []
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
                    # every attempt checks the destination again, and connects where it checked
                    target = await resolve(self.policy, url)
                    if isinstance(target, str):
                        refusal.append(target)
                        break
                    tries += 1
                    async with self._posting:
                        last_code, last_error = await self._post(target, secret, message_id, body)
                    if last_error is not None:
                        raise DeliveryFailed(last_error)
        except RetryError:
            logger.warning("webhook %s to %s failed after %d attempts", message_id, url, tries)
            return DeliveryOutcome(False, tries, last_code, last_error)
        if refusal:
            logger.warning("webhook %s not sent: %s", message_id, refusal[0])
            return DeliveryOutcome(False, tries, last_code, refusal[0])
        return DeliveryOutcome(True, tries, last_code, None)

    async def _post(
        self, target: Target, secret: str, message_id: str, body: bytes
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
        if target.host:
            headers["host"] = target.host
        extensions = {"sni_hostname": target.sni} if target.sni else None
        try:
            response = await self._client.post(
                target.url, content=body, headers=headers, extensions=extensions
            )
        except httpx.HTTPError as exc:
            logger.debug("webhook %s: %s", message_id, exc)
            return None, _reason(exc)
        if not 200 <= response.status_code < 300:
            return response.status_code, f"HTTP {status_class(response.status_code)}"
        return response.status_code, None
