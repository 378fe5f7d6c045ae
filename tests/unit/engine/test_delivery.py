"""Webhook delivery: it connects to the address it checked, and records little."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from asyncnb.contract.webhook_policy import WebhookPolicy
from asyncnb.engine.delivery import Target, WebhookSender, resolve, status_class
from asyncnb.webhooks import generate_secret


class Receiver:
    """A real HTTP server on a thread of this process, recording what it receives."""

    def __init__(self, status: int = 204) -> None:
        self.seen: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.seen.append({"host": self.headers["host"], "body": json.loads(body)})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def test_a_name_is_resolved_once_and_the_checked_address_is_called(receiver: Receiver) -> None:
    async def scenario() -> None:
        url = f"http://localhost:{receiver.port}/hook?x=1"
        target = await resolve(WebhookPolicy(), url)
        assert target == Target(
            f"http://127.0.0.1:{receiver.port}/hook?x=1", host=f"localhost:{receiver.port}"
        )
        sender = WebhookSender(attempts=1)
        outcome = await sender.deliver(url, generate_secret(), "msg_1", {"id": "w"})
        await sender.close()
        assert outcome.delivered
        # the receiver saw the name it was given, on the address that was checked
        assert receiver.seen == [{"host": f"localhost:{receiver.port}", "body": {"id": "w"}}]

    asyncio.run(scenario())


def test_a_literal_address_is_called_as_written() -> None:
    async def scenario() -> None:
        assert await resolve(WebhookPolicy(), "http://127.0.0.1:9/h") == Target(
            "http://127.0.0.1:9/h"
        )
        refused = await resolve(WebhookPolicy(allow_internal=False), "http://127.0.0.1/h")
        assert isinstance(refused, str) and "shared gateway denies" in refused

    asyncio.run(scenario())


def test_the_record_says_a_status_class_and_a_short_reason() -> None:
    async def scenario() -> None:
        refusing = Receiver(status=503)
        sender = WebhookSender(attempts=2, backoff_s=0.01)
        try:
            failed = await sender.deliver(
                f"http://127.0.0.1:{refusing.port}/h", generate_secret(), "msg_2", {}
            )
            closed = await sender.deliver("http://127.0.0.1:9/h", generate_secret(), "msg_3", {})
        finally:
            await sender.close()
            refusing.close()
        assert failed.public("u") == {
            "url": "u",
            "status": "failed",
            "attempts": 2,
            "last_status_class": "5xx",
            "last_error": "HTTP 5xx",
        }
        assert (
            closed.error == "connection failed" and closed.public("u")["last_status_class"] is None
        )

    asyncio.run(scenario())


def test_status_classes() -> None:
    assert [status_class(c) for c in (None, 200, 307, 404, 599)] == [
        None,
        "2xx",
        "3xx",
        "4xx",
        "5xx",
    ]
