"""How the gateway reads its request headers: once each, and strictly."""

from __future__ import annotations

import pytest

from asyncnb.gateway.asgi import repeated_header
from asyncnb.gateway.errors import HTTPError
from asyncnb.gateway.submission import MAX_WAIT_S, int_header, prefer_wait


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [
        ("", 0.0),
        ("wait=5", 5.0),
        ("WAIT = 2.5", 2.5),
        ("respond-async, wait=3", 3.0),
        ("wait=3; foo=bar", 3.0),
        ('wait="4"', 4.0),
        ("wait=100000", MAX_WAIT_S),
        ("return=minimal", 0.0),
    ],
)
def test_prefer_wait(prefer: str, seconds: float) -> None:
    assert prefer_wait({"prefer": prefer}) == seconds


@pytest.mark.parametrize(
    "bad", ["wait=1e9", "wait=", "wait=-1", "wait=ten", "wait=1.5s", "wait=inf"]
)
def test_a_wait_that_is_not_plain_seconds_is_a_bad_request(bad: str) -> None:
    with pytest.raises(HTTPError) as refused:
        prefer_wait({"prefer": bad})
    assert refused.value.status_code == 400 and "Prefer: wait" in refused.value.detail


@pytest.mark.parametrize("good", ["0", "7", "-3", "1000000", "-1000000"])
def test_priorities(good: str) -> None:
    assert int_header({"x-priority": good}, "x-priority", -1_000_000, 1_000_000) == int(good)


@pytest.mark.parametrize("bad", ["+5", "1_000", "0x10", "1e3", "5.0", " 5", "", "\u0665"])
def test_a_priority_is_digits_only(bad: str) -> None:
    with pytest.raises(HTTPError, match="must be an integer"):
        int_header({"x-priority": bad}, "x-priority", -10, 10)


def test_out_of_range_priorities_say_the_range() -> None:
    with pytest.raises(HTTPError, match=r"within \[-10, 10\]"):
        int_header({"x-priority": "11"}, "x-priority", -10, 10)


def test_headers_that_may_come_once() -> None:
    assert repeated_header([(b"authorization", b"a"), (b"accept", b"*/*")]) is None
    assert repeated_header([(b"accept", b"a"), (b"accept", b"b")]) is None  # may repeat
    for name in (b"authorization", b"content-length", b"x-priority", b"idempotency-key"):
        assert repeated_header([(name, b"1"), (b"host", b"x"), (name, b"2")]) == name.decode()
