"""The client calls the notebook dashboard relies on, over a mock transport (no gateway, no
process): `AsyncAPI.set_scaling` (`PATCH /apis/{api}`) and the last submitted payload."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from asyncnb.client import AsyncAPI, Client
from asyncnb.errors import GatewayError, UsageError

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


@contextmanager
def api_with(answer: Handler, seen: list[httpx.Request]) -> Iterator[AsyncAPI]:
    """A real handle whose client answers with `answer` (and records each request)."""
    client = Client("http://gw.invalid", token="t0ken")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    client._http = httpx.Client(
        base_url=client.url,
        headers=client.auth_headers(),
        transport=httpx.MockTransport(handler),
    )
    try:
        yield AsyncAPI(client, "demo")
    finally:
        client.close()


def test_set_scaling_patches_the_api_with_the_admin_route(seen: list[httpx.Request]) -> None:
    record = {"name": "demo", "version": 3, "options": {"min_replicas": 0, "max_replicas": 2}}
    with api_with(lambda request: httpx.Response(200, json=record), seen) as api:
        assert api.set_scaling(min_replicas=0, max_replicas=2) == record
        request = seen[-1]
        assert (request.method, request.url.path) == ("PATCH", "/apis/demo")
        assert json.loads(request.content) == {"min_replicas": 0, "max_replicas": 2}
        assert request.headers["authorization"] == "Bearer t0ken"
        api.set_scaling(max_replicas=5, target_in_flight=2.5)
        assert json.loads(seen[-1].content) == {"max_replicas": 5, "target_in_flight": 2.5}
        with pytest.raises(UsageError, match="nothing to change"):
            api.set_scaling()
        assert len(seen) == 2


@pytest.mark.parametrize(
    ("status", "detail", "message"),
    [
        (
            422,
            [{"loc": ["body"], "msg": "Value error, min_replicas must not exceed max_replicas"}],
            "body: Value error, min_replicas must not exceed max_replicas",
        ),
        (422, "not a scaling option: gpu", "not a scaling option: gpu"),
        (404, "API 'demo' is not deployed", "is not deployed"),
        (403, "invalid token", "invalid token"),
    ],
)
def test_set_scaling_refusals_are_usage_errors(
    seen: list[httpx.Request], status: int, detail: Any, message: str
) -> None:
    refusal = httpx.Response(status, json={"detail": detail})
    with api_with(lambda request: refusal, seen) as api, pytest.raises(UsageError, match=message):
        api.set_scaling(min_replicas=5)


def test_a_gateway_failure_stays_a_gateway_error(seen: list[httpx.Request]) -> None:
    answer = httpx.Response(503, json={"detail": "storage unavailable"})
    with api_with(lambda request: answer, seen) as api:
        with pytest.raises(GatewayError) as caught:
            api.set_scaling(max_replicas=2)
        assert caught.value.status_code == 503 and not isinstance(caught.value, UsageError)


def test_the_handle_remembers_its_last_accepted_json_payload(seen: list[httpx.Request]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if b"refused" in request.content:
            return httpx.Response(422, json={"detail": "bad X-Priority"})
        return httpx.Response(202, json={"id": "a" * 32, "status": "in_queue"})

    with api_with(answer, seen) as api:
        assert api.last_payload_json is None
        api.submit({"text": "good"})
        assert api.last_payload_json == '{"text": "good"}'
        with pytest.raises(UsageError):
            api.submit({"text": "refused"})
        assert api.last_payload_json == '{"text": "good"}'  # only what was accepted
        api.submit(b"\x00raw bytes")
        api.submit("plain text")
        assert api.last_payload_json == '{"text": "good"}'  # only JSON payloads
        api.submit({"big": "x" * 70_000})
        assert api.last_payload_json == '{"text": "good"}'  # only up to 64 KiB
        api.submit([1, 2, 3])
        assert api.last_payload_json == "[1, 2, 3]"
