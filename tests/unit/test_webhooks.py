"""Standard Webhooks signing, checked against the reference package, and retried delivery."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from asyncnb.engine.delivery import DeliveryOutcome, WebhookSender
from asyncnb.webhooks import generate_secret, sign, verify

BODY = b'{"id":"abc","status":"completed","result":{"x":1}}'


def _headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, "msg_1", stamp, body),
    }


def test_generate_secret_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_") :], validate=True)) == 32
    assert generate_secret() != secret


def test_sign_format() -> None:
    signature = sign(generate_secret(), "msg_1", 1_700_000_000, BODY)
    version, _, digest = signature.partition(",")
    assert version == "v1"
    assert len(base64.b64decode(digest, validate=True)) == 32


def test_sign_is_verified_by_standardwebhooks() -> None:
    secret = generate_secret()
    headers = _headers(secret, BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_standardwebhooks_rejects_tampered_body() -> None:
    secret = generate_secret()
    headers = _headers(secret, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"1", b"2"), headers)


def test_known_vector() -> None:
    """The example of the Standard Webhooks spec (its reference test vector)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_accepts_own_signature() -> None:
    secret = generate_secret()
    assert verify(secret, _headers(secret, BODY), BODY)


def test_verify_is_case_insensitive_on_header_names() -> None:
    secret = generate_secret()
    headers = {k.title(): v for k, v in _headers(secret, BODY).items()}
    assert verify(secret, headers, BODY)


def test_verify_accepts_one_of_several_signatures() -> None:
    secret = generate_secret()
    headers = _headers(secret, BODY)
    other = sign(generate_secret(), "msg_1", int(headers["webhook-timestamp"]), BODY)
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert verify(secret, headers, BODY)


def test_verify_rejects_tampered_body() -> None:
    secret = generate_secret()
    assert not verify(secret, _headers(secret, BODY), BODY + b" ")


def test_verify_rejects_wrong_secret() -> None:
    assert not verify(generate_secret(), _headers(generate_secret(), BODY), BODY)


def test_verify_rejects_changed_message_id() -> None:
    secret = generate_secret()
    headers = _headers(secret, BODY)
    headers["webhook-id"] = "msg_2"
    assert not verify(secret, headers, BODY)


def test_verify_rejects_stale_and_future_timestamps() -> None:
    secret = generate_secret()
    now = int(time.time())
    assert not verify(secret, _headers(secret, BODY, now - 301), BODY)
    assert not verify(secret, _headers(secret, BODY, now + 301), BODY)
    assert verify(secret, _headers(secret, BODY, now - 250), BODY)
    assert verify(secret, _headers(secret, BODY, now - 1000), BODY, tolerance_s=2000)


def test_verify_rejects_missing_or_malformed_headers() -> None:
    secret = generate_secret()
    good = _headers(secret, BODY)
    for missing in good:
        partial = {k: v for k, v in good.items() if k != missing}
        assert not verify(secret, partial, BODY)
    assert not verify(secret, {**good, "webhook-timestamp": "soon"}, BODY)


def test_verify_accepts_reference_signatures() -> None:
    secret = generate_secret()
    stamp = int(time.time())
    reference = Webhook(secret).sign(
        "msg_9", datetime.fromtimestamp(stamp, tz=timezone.utc), BODY.decode()
    )
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(stamp)}
    assert verify(secret, {**headers, "webhook-signature": reference}, BODY)


# delivery ---------------------------------------------------------------------------------------


class _Receiver:
    """A loopback HTTP server failing the first `fail_first` POSTs with 500."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = 500 if len(receiver.requests) <= receiver.fail_first else 204
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def flaky_receiver() -> Iterator[_Receiver]:
    receiver = _Receiver(fail_first=2)
    yield receiver
    receiver.close()


def _deliver(sender: WebhookSender, url: str, secret: str, event: dict[str, Any]) -> Any:
    async def go() -> DeliveryOutcome:
        try:
            return await sender.deliver(url, secret, "msg_42", event)
        finally:
            await sender.close()

    return asyncio.run(go())


def test_deliver_retries_until_success(flaky_receiver: _Receiver) -> None:
    secret = generate_secret()
    event = {"id": "abc", "status": "completed"}
    sender = WebhookSender(attempts=5, backoff_s=0.01, max_backoff_s=0.05)
    outcome = _deliver(sender, flaky_receiver.url, secret, event)
    assert outcome.delivered is True
    assert outcome.attempts == 3
    assert outcome.status_code == 204
    assert outcome.error is None
    assert len(flaky_receiver.requests) == 3
    headers, body = flaky_receiver.requests[-1]
    assert json.loads(body) == event
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == "msg_42"
    assert verify(secret, headers, body)
    assert Webhook(secret).verify(body, headers) == event
    public = outcome.public(flaky_receiver.url)
    assert public["status"] == "delivered" and public["attempts"] == 3


def test_deliver_gives_up_after_attempts_on_http_errors(flaky_receiver: _Receiver) -> None:
    sender = WebhookSender(attempts=2, backoff_s=0.01, max_backoff_s=0.05)
    outcome = _deliver(sender, flaky_receiver.url, generate_secret(), {"id": "x"})
    assert outcome.delivered is False
    assert outcome.attempts == 2
    assert outcome.status_code == 500
    assert outcome.error == "HTTP 5xx"  # a status class: the record is no port scanner
    public = outcome.public(flaky_receiver.url)
    assert public["status"] == "failed" and public["last_status_class"] == "5xx"
    assert "last_status_code" not in public


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_deliver_to_closed_port_fails_after_all_attempts() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    sender = WebhookSender(attempts=3, backoff_s=0.01, max_backoff_s=0.05)
    started = time.monotonic()
    outcome = _deliver(sender, url, generate_secret(), {"id": "x"})
    assert outcome.delivered is False
    assert outcome.attempts == 3
    assert outcome.status_code is None
    assert outcome.error == "connection failed"  # a short reason, not the raw error
    assert time.monotonic() - started < 10


def test_sender_makes_at_least_one_attempt() -> None:
    sender = WebhookSender(attempts=0)
    assert sender.attempts == 1
    asyncio.run(sender.close())
