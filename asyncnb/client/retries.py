"""How the client rides out a gateway that is briefly away: a restart, or a standby taking
over from a dead gateway (connection errors, then `503` + `Retry-After`, for up to the lease
TTL plus a few seconds).

`send` tries one request until it gets an answer worth keeping, within a `RetryPolicy`:

- a request that is safe to repeat (a read, or a submit with its `Idempotency-Key`) is
  retried on connection errors, on `502`/`503`/`504` and on `429` with `Retry-After`, with
  jittered exponential backoff (or the `Retry-After` the gateway asked for), until
  `timeout_s` is spent. A gateway that never answered this client (a wrong URL, nothing
  started) is given `first_contact_s` only;
- any other request is sent once per gateway URL, moving on to the next only when that one
  surely did not take it (connection not made, or `503`).

The outcome of each try is a `Sent` value, never an exception, so the loop (tenacity) only
ever looks at results.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
from tenacity import RetryCallState, Retrying, retry_if_result

RETRY_STATUSES = frozenset({429, 502, 503, 504})
FAILOVER_STATUSES = frozenset({502, 503, 504})  # the gateway (or its proxy) is not serving
# the connection was never made, so nothing of the request reached a gateway
NOT_SENT: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
# the gateway went away, before or during the request (kill -9 mid-request: a reset)
TRANSIENT: tuple[type[httpx.TransportError], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often the client retries; `timeout_s=0` turns retries off."""

    timeout_s: float = 60.0
    first_contact_s: float = 3.0
    backoff_first_s: float = 0.2
    backoff_max_s: float = 2.0
    retry_after_max_s: float = 10.0
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Sent:
    """One try of a request: the gateway's answer, or why there was none."""

    url: str
    response: httpx.Response | None = None
    error: httpx.TransportError | None = None
    attempts: int = 1
    seconds: float = 0.0
    exhausted: bool = False  # still failing when the retry budget ran out

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    def transient(self) -> bool:
        """Worth another try of a request that is safe to repeat."""
        if self.error is not None:
            return isinstance(self.error, TRANSIENT)
        if self.status == 429:
            return self.retry_after() is not None
        return self.status in RETRY_STATUSES

    def not_taken(self) -> bool:
        """Surely not acted on, so safe to send to another gateway whatever the request."""
        if self.error is not None:
            return isinstance(self.error, NOT_SENT)
        return self.status == 503

    def fails_over(self) -> bool:
        """This gateway is not serving now: the next try goes to the next URL, if any."""
        if self.error is not None:
            return isinstance(self.error, TRANSIENT)
        return self.status in FAILOVER_STATUSES

    def retry_after(self) -> float | None:
        """The answer's `Retry-After` in seconds (dates are not read), or None."""
        raw = self.response.headers.get("retry-after") if self.response is not None else None
        try:
            seconds = float(raw) if raw is not None else math.nan
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None

    def note(self) -> str:
        """What to add to the error when retrying did not help ('' when it was not tried)."""
        if not self.exhausted:
            return ""
        return f" (gave up after {self.attempts} attempts in {self.seconds:.1f} s of retrying)"


class _Budget:
    """The stop and wait of one `send`: tenacity calls them after each failed try."""

    def __init__(self, policy: RetryPolicy, urls: int, reached: Callable[[], bool]) -> None:
        self.policy = policy
        self.urls = max(1, urls)
        self.reached = reached

    def limit(self) -> float:
        if self.reached():
            return self.policy.timeout_s
        return min(self.policy.timeout_s, self.policy.first_contact_s)

    def stop(self, state: RetryCallState) -> bool:
        return state.seconds_since_start is None or state.seconds_since_start >= self.limit()

    def wait(self, state: RetryCallState) -> float:
        assert state.outcome is not None
        sent: Sent = state.outcome.result()
        if sent.fails_over() and state.attempt_number % self.urls:
            return 0.0  # the next URL at once; a whole round of them fails before a pause
        after = sent.retry_after()
        if after is not None:
            delay = min(after, self.policy.retry_after_max_s)
        else:
            rounds = math.ceil(state.attempt_number / self.urls)
            high = min(self.policy.backoff_max_s, self.policy.backoff_first_s * 2 ** (rounds - 1))
            delay = random.uniform(high / 2, high)
        left = self.limit() - (state.seconds_since_start or 0.0)
        return max(0.0, min(delay, left))


def _given_up(state: RetryCallState) -> Sent:
    assert state.outcome is not None
    sent: Sent = state.outcome.result()
    seconds = state.seconds_since_start or 0.0
    return replace(sent, attempts=state.attempt_number, seconds=seconds, exhausted=True)


def send(
    attempt: Callable[[], Sent],
    policy: RetryPolicy,
    *,
    repeatable: bool,
    urls: int = 1,
    reached: Callable[[], bool] = lambda: True,
) -> Sent:
    """Try `attempt` until its outcome is final, or the policy's budget is spent (then the
    last outcome, marked `exhausted`). `urls`: how many gateway URLs `attempt` cycles
    through; `reached`: whether any gateway has answered this client yet."""
    if repeatable and policy.timeout_s > 0:
        budget = _Budget(policy, urls, reached)
        retrying = Retrying(
            retry=retry_if_result(Sent.transient),
            stop=budget.stop,
            wait=budget.wait,
            sleep=policy.sleep,
            retry_error_callback=_given_up,
        )
        return retrying(attempt)
    if urls <= 1:
        return attempt()
    once_each = Retrying(
        retry=retry_if_result(Sent.not_taken),
        stop=lambda state: state.attempt_number >= urls,
        sleep=policy.sleep,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    return once_each(attempt)
