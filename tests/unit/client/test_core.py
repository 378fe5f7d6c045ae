"""`Client` and `AsyncAPI` while the gateway is away (a restart, a standby taking over), over
mock transports (no gateway, no process): submits and reads retried on 503/502/504, 429 with
Retry-After and connection errors, always with one Idempotency-Key; refusals never retried;
the budget; failing over along a list of gateway URLs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from asyncnb.client import AsyncAPI, Client
from asyncnb.client.retries import RetryPolicy
from asyncnb.errors import GatewayError, GatewayUnreachable, UsageError

Handler = Callable[[httpx.Request], httpx.Response]
WID = "b" * 32
STANDBY = {"detail": "this gateway is a standby (active: http://a); retry later"}


def quick(**overrides: Any) -> RetryPolicy:
    """A policy whose pauses take no time; `slept` (when given) records what it asked for."""
    fields: dict[str, Any] = {
        "timeout_s": 30.0,
        "backoff_first_s": 0.001,
        "backoff_max_s": 0.002,
        "retry_after_max_s": 0.002,
    }
    return RetryPolicy(**{**fields, **overrides})


@contextmanager
def api_with(
    answer: Handler,
    seen: list[httpx.Request],
    url: str = "http://gw.invalid",
    policy: RetryPolicy | None = None,
    **client_options: Any,
) -> Iterator[AsyncAPI]:
    """A real handle whose client answers with `answer` (and records each request)."""
    client = Client(url, token="t0ken", **client_options)
    client.retry_policy = policy or quick(timeout_s=client.retry_timeout)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    client._http = httpx.Client(
        base_url=client.url, headers=client.auth_headers(), transport=httpx.MockTransport(handler)
    )
    try:
        yield AsyncAPI(client, "demo")
    finally:
        client.close()


def failing(times: int, then: Handler, fail: Handler) -> Handler:
    """`fail` for the first `times` requests, `then` after."""
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return fail(request) if calls <= times else then(request)

    return answer


def accepted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"id": WID, "status": "in_queue"})


def standby(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json=STANDBY, headers={"Retry-After": "1"})


def raises(exc: type[httpx.TransportError]) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc("the gateway went away", request=request)

    return answer


def keys(seen: list[httpx.Request]) -> list[str]:
    return [request.headers.get("idempotency-key", "") for request in seen]


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


# submits ---------------------------------------------------------------------------------------
def test_a_503_is_retried_after_its_retry_after_with_one_generated_key(
    seen: list[httpx.Request],
) -> None:
    slept: list[float] = []
    policy = RetryPolicy(sleep=slept.append)
    with api_with(failing(2, accepted, standby), seen, policy=policy) as api:
        workload = api.submit({"x": 1})
    assert workload.id == WID
    assert len(seen) == 3 and slept == [1.0, 1.0]  # the standby's Retry-After
    key = keys(seen)[0]
    assert len(key) == 32 and uuid.UUID(hex=key).version == 4
    assert keys(seen) == [key] * 3
    assert {request.content for request in seen} == {b'{"x": 1}'}


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.ReadError,
        httpx.WriteError,
        httpx.RemoteProtocolError,
        httpx.ReadTimeout,
    ],
)
def test_connection_errors_are_retried_with_the_same_key(
    seen: list[httpx.Request], error: type[httpx.TransportError]
) -> None:
    with api_with(failing(3, accepted, raises(error)), seen) as api:
        assert api.submit({"x": 1}, priority=3).id == WID
    assert len(seen) == 4 and len(set(keys(seen))) == 1
    assert {request.headers["x-priority"] for request in seen} == {"3"}


@pytest.mark.parametrize("status", [502, 504])
def test_a_bad_gateway_or_gateway_timeout_is_retried(
    seen: list[httpx.Request], status: int
) -> None:
    proxy = httpx.Response(status, text="<html>upstream gone</html>")
    with api_with(failing(2, accepted, lambda request: proxy), seen) as api:
        assert api.submit({"x": 1}).id == WID
    assert len(seen) == 3 and len(set(keys(seen))) == 1


def test_a_reset_after_the_gateway_took_the_submit_gets_that_workload_back(
    seen: list[httpx.Request],
) -> None:
    """kill -9 mid-request: the gateway persisted the workload, its 202 never came. The retry
    carries the same key, so the next gateway replays the workload instead of making one."""
    workloads: dict[str, str] = {}  # idempotency key → workload id, as the gateway keeps them

    def gateway(request: httpx.Request) -> httpx.Response:
        key = request.headers["idempotency-key"]
        if key in workloads:
            body = {"id": workloads[key], "status": "in_queue"}
            return httpx.Response(202, json=body, headers={"Idempotent-Replayed": "true"})
        workloads[key] = uuid.uuid4().hex
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with api_with(gateway, seen) as api:
        workload = api.submit({"x": 1})
    assert len(workloads) == 1 and workload.id == next(iter(workloads.values()))
    assert len(seen) == 2


def test_429_is_retried_only_with_a_retry_after(seen: list[httpx.Request]) -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"detail": "rate limit"}, headers={"Retry-After": "2"})

    with api_with(failing(2, accepted, limited), seen) as api:
        assert api.submit({"x": 1}).id == WID
    assert len(seen) == 3
    seen.clear()
    bare = httpx.Response(429, json={"detail": "slow down"})
    with api_with(lambda request: bare, seen) as api, pytest.raises(GatewayError) as caught:
        api.submit({"x": 1})
    assert caught.value.status_code == 429 and len(seen) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, UsageError),
        (401, GatewayError),
        (403, GatewayError),
        (404, UsageError),
        (409, GatewayError),
        (413, UsageError),
        (422, UsageError),
        (500, GatewayError),
    ],
)
def test_refusals_are_never_retried(
    seen: list[httpx.Request], status: int, error: type[Exception]
) -> None:
    refusal = httpx.Response(status, json={"detail": f"refused with {status}"})
    with api_with(lambda request: refusal, seen) as api, pytest.raises(error) as caught:
        api.submit({"x": 1})
    assert len(seen) == 1
    assert str(caught.value).endswith(f"refused with {status}")  # no note of retrying


def test_a_transport_error_that_is_ours_is_not_retried(seen: list[httpx.Request]) -> None:
    with (
        api_with(raises(httpx.UnsupportedProtocol), seen) as api,
        pytest.raises(GatewayUnreachable, match="went away"),
    ):
        api.submit({"x": 1})
    assert len(seen) == 1


def test_when_the_budget_runs_out_the_last_status_is_named(seen: list[httpx.Request]) -> None:
    with (
        api_with(standby, seen, policy=quick(timeout_s=0.05)) as api,
        pytest.raises(GatewayError) as caught,
    ):
        api.submit({"x": 1})
    assert caught.value.status_code == 503 and len(seen) > 1
    message = str(caught.value)
    assert message.startswith("503: this gateway is a standby"), message
    assert f"gave up after {len(seen)} attempts in " in message
    assert "s of retrying" in message


def test_when_the_budget_runs_out_the_last_connection_error_is_named(
    seen: list[httpx.Request],
) -> None:
    policy = quick(timeout_s=0.05, first_contact_s=0.05)
    with (
        api_with(raises(httpx.ConnectError), seen, policy=policy) as api,
        pytest.raises(GatewayUnreachable) as caught,
    ):
        api.submit({"x": 1})
    message = str(caught.value)
    assert message.startswith("cannot reach the gateway at http://gw.invalid (gave up after ")
    assert message.endswith(": the gateway went away") and len(seen) > 1


def test_the_callers_own_key_is_sent_on_every_try(seen: list[httpx.Request]) -> None:
    with api_with(failing(2, accepted, raises(httpx.ReadError)), seen) as api:
        api.submit({"x": 1}, idempotency_key="order-17")
    assert keys(seen) == ["order-17"] * 3


def test_each_submit_has_a_key_of_its_own(seen: list[httpx.Request]) -> None:
    with api_with(accepted, seen) as api:
        api.submit_many([{"x": 1}, {"x": 2}, {"x": 3}], progress=False)
    assert len(set(keys(seen))) == 3 and all(keys(seen))


def test_retry_timeout_zero_sends_once(seen: list[httpx.Request]) -> None:
    with api_with(standby, seen, retry_timeout=0) as api, pytest.raises(GatewayError) as caught:
        api.submit({"x": 1})
    assert caught.value.status_code == 503 and len(seen) == 1
    assert "gave up" not in str(caught.value)
    assert keys(seen)[0]  # a key all the same: the caller may resubmit with it


def test_a_gateway_that_never_answered_gets_only_the_first_contact_grace(
    seen: list[httpx.Request],
) -> None:
    """A wrong URL fails at once, as before; a gateway that answered once gets the budget."""
    policy = quick(first_contact_s=0.0)
    with (
        api_with(raises(httpx.ConnectError), seen, policy=policy) as api,
        pytest.raises(GatewayUnreachable),
    ):
        api.submit({"x": 1})
    assert len(seen) == 1
    seen.clear()

    gone = failing(3, accepted, raises(httpx.ConnectError))

    def status_then_gone(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"name": "demo", "state": "ready"})
        return gone(request)

    with api_with(status_then_gone, seen, policy=policy) as api:
        api.status()
        assert api.submit({"x": 1}).id == WID
    assert len(seen) == 5


# reads -----------------------------------------------------------------------------------------
def test_reads_ride_out_the_same_window(seen: list[httpx.Request]) -> None:
    calls = 0

    def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if request.method == "POST":
            return accepted(request)
        if calls in (2, 3):
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        if calls in (4, 5, 6):
            return standby(request)
        if request.url.path.endswith("/result"):
            return httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"})
        return httpx.Response(200, json={"id": WID, "status": "completed"})

    with api_with(gateway, seen) as api:
        workload = api.submit({"x": 1})
        assert workload.result(timeout=30) == b"\x89PNG"
    assert [request.method for request in seen] == ["POST"] + ["GET"] * 7


# several gateways ------------------------------------------------------------------------------
def test_a_list_of_urls_is_read_from_a_string_or_a_sequence() -> None:
    with Client("http://a:1/, http://b:2", token="t") as client:
        assert client.urls == ["http://a:1", "http://b:2"] and client.url == "http://a:1"
    with Client(["http://a:1", "http://b:2/"], token="t") as client:
        assert client.urls == ["http://a:1", "http://b:2"]
    with pytest.raises(UsageError):
        Client(" , ", token="t")


def test_submits_fail_over_from_a_dead_gateway_to_the_one_that_takes_over(
    seen: list[httpx.Request],
) -> None:
    """a was killed (refused); b stands by (503) for two tries, then serves."""
    b = failing(2, accepted, standby)

    def gateways(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.invalid":
            raise httpx.ConnectError("Connection refused", request=request)
        return b(request)

    with api_with(gateways, seen, url="http://a.invalid,http://b.invalid") as api:
        assert api.submit({"x": 1}).id == WID
        assert api.client.url == "http://b.invalid"
        assert api.url == "http://b.invalid/demo"
        hosts = [request.url.host for request in seen]
        assert hosts == ["a.invalid", "b.invalid"] * 3
        assert len(set(keys(seen))) == 1
        seen.clear()
        api.submit({"x": 2})  # it stays with the gateway that answers
        assert [request.url.host for request in seen] == ["b.invalid"]


def test_a_request_unsafe_to_repeat_goes_once_to_each_gateway_that_did_not_take_it(
    seen: list[httpx.Request],
) -> None:
    record = {"name": "demo", "version": 2}

    def gateways(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.invalid":
            return standby(request)
        return httpx.Response(200, json=record)

    with api_with(gateways, seen, url="http://a.invalid,http://b.invalid") as api:
        assert api.set_scaling(max_replicas=2) == record
        assert [request.url.host for request in seen] == ["a.invalid", "b.invalid"]
    seen.clear()
    broken = httpx.Response(500, json={"detail": "internal error"})
    with (
        api_with(lambda request: broken, seen, url="http://a.invalid,http://b.invalid") as api,
        pytest.raises(GatewayError),
    ):
        api.set_scaling(max_replicas=2)  # a 500 may have done something: not resent
    assert len(seen) == 1
    seen.clear()
    with api_with(standby, seen) as api, pytest.raises(GatewayError):
        api.set_scaling(max_replicas=2)  # one gateway: once, as before
    assert len(seen) == 1
