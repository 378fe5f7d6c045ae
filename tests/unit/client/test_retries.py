"""The retry loop's pieces (asyncnb/client/retries.py): reading Retry-After, capping it and the
backoff, the round of URLs before a pause, and what counts as surely not taken."""

from __future__ import annotations

import httpx
import pytest

from asyncnb.client.retries import RetryPolicy, Sent, send

URL = "http://gw.invalid"


def answer(status: int, retry_after: str | None = None) -> Sent:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Sent(URL, response=httpx.Response(status, headers=headers))


def refused() -> Sent:
    return Sent(URL, error=httpx.ConnectError("Connection refused"))


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("1", 1.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("-1", None),
        ("soon", None),
        ("inf", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_seconds_only(raw: str | None, seconds: float | None) -> None:
    assert answer(503, raw).retry_after() == seconds


def test_what_is_transient_and_what_surely_was_not_taken() -> None:
    assert answer(503).transient() and answer(503).not_taken() and answer(503).fails_over()
    assert answer(502).transient() and not answer(502).not_taken()
    assert answer(429, "1").transient() and not answer(429).transient()
    assert not answer(429, "1").fails_over()  # a key's limit is the same on every gateway
    assert refused().transient() and refused().not_taken() and refused().fails_over()
    reset = Sent(URL, error=httpx.RemoteProtocolError("Server disconnected"))
    assert reset.transient() and not reset.not_taken()  # it may have been acted on
    for status in (200, 202, 400, 404, 409, 500):
        assert not answer(status).transient()


def run(outcomes: list[Sent], policy: RetryPolicy, urls: int = 1) -> tuple[Sent, list[float]]:
    slept: list[float] = []
    tries = iter(outcomes)
    policy = RetryPolicy(**{**policy.__dict__, "sleep": slept.append})
    return send(lambda: next(tries), policy, repeatable=True, urls=urls), slept


def test_retry_after_is_capped_and_the_backoff_grows_to_its_cap() -> None:
    policy = RetryPolicy(retry_after_max_s=4.0, backoff_first_s=0.5, backoff_max_s=2.0)
    outcomes = [answer(503, "30"), *[answer(502)] * 4, answer(202)]
    sent, slept = run(outcomes, policy)
    assert sent.status == 202 and not sent.exhausted and sent.note() == ""
    assert slept[0] == 4.0
    highs = [1.0, 2.0, 2.0, 2.0]  # of attempts 2..5: 0.5 * 2**(n-1), capped; jittered down
    assert all(high / 2 <= wait <= high for wait, high in zip(slept[1:], highs, strict=True))


def test_a_round_of_urls_goes_by_before_each_pause() -> None:
    outcomes = [refused(), answer(503, "1"), refused(), answer(503, "1"), answer(202)]
    sent, slept = run(outcomes, RetryPolicy(), urls=2)
    assert sent.status == 202 and slept == [0.0, 1.0, 0.0, 1.0]
