"""A workload's event stream (`GET /{api}/{id}/events`, Server-Sent Events), read by the client.

`parse_sse` turns the lines of a `text/event-stream` body into `ServerSentEvent`s (comments,
multi-line `data`, `id` and `retry` as the WHATWG spec reads them). `stream_events` (sync) and
`astream_events` (asyncio) yield each event's `data` as a dict, in `event_id` order, and resume
by themselves when the connection drops, the stream ends before a terminal event or the gateway
answers 502/503/504 (it restarts) or 429: they reconnect with `Last-Event-ID` set to the last
event seen, after a short backoff (the stream's `retry:` first), and give up with
`EventStreamLost` once nothing has come for `reconnect_s` seconds. `fresh_outputs` and
`afresh_outputs` keep, of those events, the outputs not yet seen (an output index a later
attempt emits again is skipped) and end as `result()` does. The event fields are
`asyncnb.contract.events`'.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..contract.events import OUTPUT, TERMINAL_TYPES, decode_output
from ..errors import GatewayError, UsageError, WorkloadCancelled, WorkloadFailed

EVENT_STREAM_TYPE = "text/event-stream"
# A reconnection waits this long first, then twice as long each time, up to RECONNECT_MAX_S
# (a `retry:` field of the stream sets the first wait instead).
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
# The gateway sends a keep-alive comment every 15 s: a connection silent for this long is dead.
READ_TIMEOUT_S = 45.0
TRANSIENT_STATUSES = (429, 502, 503, 504)


class EventStreamLost(GatewayError):
    """The event stream could not be resumed in time; `last_event_id` says where it stopped."""

    def __init__(self, status_code: int, detail: str, last_event_id: int | None) -> None:
        super().__init__(status_code, detail)
        self.last_event_id = last_event_id


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None  # the stream's last event id when it came (ids carry over)
    retry: int | None = None  # the reconnection time (ms) the stream asked for, if any


class SSEDecoder:
    """Lines (without their line ending) in, events out: `feed` answers an event when a blank
    line ends one that has data."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            data, event = self._data, self._event
            self._data, self._event = [], ""
            if not data:
                return None
            return ServerSentEvent(event or "message", "\n".join(data), self.last_id, self.retry)
        if line.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and _is_number(value):
            self.retry = int(value)
        return None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """The events of a whole event-stream body, given as lines (an unfinished last one is
    dropped, as the spec says)."""
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event


def _event_of(sse: ServerSentEvent) -> dict[str, Any]:
    try:
        event = json.loads(sse.data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise GatewayError(502, f"the event stream sent data that is not a JSON object: {sse.data}")
    event.setdefault("type", sse.event)
    if not isinstance(event.get("event_id"), int) and sse.id and _is_number(sse.id):
        event["event_id"] = int(sse.id)
    return event


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


class _Transient(Exception):
    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code


def _refusal(response: httpx.Response, body: bytes) -> Exception | None:
    """Why a response to the events request is no event stream (None when it is one)."""
    status = response.status_code
    if status in TRANSIENT_STATUSES:
        return _Transient(status, f"the gateway answered {status}")
    if status >= 400:
        try:
            detail = json.loads(body).get("detail", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = body.decode(errors="replace")
        return UsageError(str(detail)) if status in (400, 404) else GatewayError(status, detail)
    media = response.headers.get("content-type", "")
    if not media.startswith(EVENT_STREAM_TYPE):
        return GatewayError(status, f"expected an event stream, the gateway sent {media!r}")
    return None


class _Resume:
    """What both loops share: the last event seen, the headers that resume after it, and when
    to wait and when to give up."""

    def __init__(self, what: str, last_event_id: int | None, reconnect_s: float) -> None:
        self.what = what
        self.last_event_id = last_event_id
        self.reconnect_s = reconnect_s
        self.decoder = SSEDecoder()
        self.finished = False
        self._down_since: float | None = None  # the first failure since anything came
        self._failures = 0  # since the last event

    def headers(self) -> dict[str, str]:
        headers = {"Accept": EVENT_STREAM_TYPE, "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        return headers

    def connecting(self) -> None:
        retry = self.decoder.retry  # the stream's reconnection time holds until it says another
        self.decoder = SSEDecoder()  # a half-received event of a dropped connection is lost
        self.decoder.last_id = None if self.last_event_id is None else str(self.last_event_id)
        self.decoder.retry = retry

    def line(self, line: str) -> dict[str, Any] | None:
        """An event to hand on, or None (part of one, a comment, or one seen before)."""
        self._down_since = None  # the connection is alive
        sse = self.decoder.feed(line)
        if sse is None:
            return None
        event = _event_of(sse)
        event_id = event.get("event_id")
        self.finished = event.get("type") in TERMINAL_TYPES
        if isinstance(event_id, int):
            seen = self.last_event_id is not None and event_id <= self.last_event_id
            if seen and not self.finished:  # the end is never one seen: it ends the stream
                return None
            self.last_event_id = max(event_id, self.last_event_id or 0)
        self._failures = 0
        return event

    def failed(self, reason: str, status_code: int = 503) -> float:
        """The wait before the next try; EventStreamLost when the time to resume is up."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_since >= self.reconnect_s:
            after = "" if self.last_event_id is None else f" after event {self.last_event_id}"
            raise EventStreamLost(
                status_code,
                f"lost the event stream of {self.what}{after}: {reason}, and no answer for "
                f"{self.reconnect_s:g} s",
                self.last_event_id,
            )
        retry = self.decoder.retry
        first = RECONNECT_FIRST_S if retry is None else max(RECONNECT_FIRST_S, retry / 1000)
        delay = min(max(RECONNECT_MAX_S, first), first * 2**self._failures)
        self._failures += 1
        left = self.reconnect_s - (now - self._down_since)
        return max(0.0, min(delay, left))


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(10.0, read=READ_TIMEOUT_S)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def stream_events(
    http: httpx.Client,
    path: str,
    what: str = "the workload",
    last_event_id: int | None = None,
    reconnect_s: float = 60.0,
) -> Iterator[dict[str, Any]]:
    """The events of `GET path` (a workload's `/events`), after `last_event_id`, until the
    terminal one; resumed after drops and gateway restarts (see the module)."""
    state = _Resume(what, last_event_id, reconnect_s)
    while True:
        status = 503
        state.connecting()
        try:
            with http.stream("GET", path, headers=state.headers(), timeout=_timeout()) as answer:
                refusal = _refusal(answer, answer.read() if answer.status_code >= 400 else b"")
                if refusal is not None:
                    raise refusal
                for line in answer.iter_lines():
                    event = state.line(line)
                    if event is not None:
                        yield event
                        if state.finished:
                            return
            reason = "the stream ended before the workload did"
        except httpx.TransportError as exc:
            reason = _reason(exc)
        except _Transient as exc:
            reason, status = str(exc), exc.status_code
        time.sleep(state.failed(reason, status))


async def astream_events(
    open_http: Callable[[], httpx.AsyncClient],
    path: str,
    what: str = "the workload",
    last_event_id: int | None = None,
    reconnect_s: float = 60.0,
) -> AsyncIterator[dict[str, Any]]:
    """`stream_events` on the running event loop, over a client `open_http()` makes (and this
    closes)."""
    state = _Resume(what, last_event_id, reconnect_s)
    async with open_http() as http:
        while True:
            status = 503
            state.connecting()
            try:
                async with http.stream(
                    "GET", path, headers=state.headers(), timeout=_timeout()
                ) as answer:
                    body = await answer.aread() if answer.status_code >= 400 else b""
                    refusal = _refusal(answer, body)
                    if refusal is not None:
                        raise refusal
                    async for line in answer.aiter_lines():
                        event = state.line(line)
                        if event is not None:
                            yield event
                            if state.finished:
                                return
                reason = "the stream ended before the workload did"
            except httpx.TransportError as exc:
                reason = _reason(exc)
            except _Transient as exc:
                reason, status = str(exc), exc.status_code
            await asyncio.sleep(state.failed(reason, status))


# outputs ------------------------------------------------------------------------------------
class FreshOutputs:
    """Which output events are new: one whose `index` an earlier event (of any attempt) had is
    not, so a retried attempt's outputs show only past where the last one got."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def fresh(self, event: dict[str, Any]) -> bool:
        if event.get("type") != OUTPUT:
            return False
        index = event.get("index")
        if not isinstance(index, int):
            return True
        if index in self._seen:
            return False
        self._seen.add(index)
        return True


def _end(event: dict[str, Any]) -> None:
    """At the terminal event: raise as `Workload.result()` does, unless it completed."""
    if event.get("type") == "failed":
        raise WorkloadFailed(str(event.get("id", "")), event.get("error") or {})
    if event.get("type") == "cancelled":
        raise WorkloadCancelled(str(event.get("id", "")))


def fresh_outputs(events: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """The decoded values (`decode_output`: bytes for base64, None for a truncated one) of the
    new outputs among `events`; WorkloadFailed or WorkloadCancelled at such an end."""
    outputs = FreshOutputs()
    try:
        for event in events:
            if outputs.fresh(event):
                yield decode_output(event)
            elif event.get("type") in TERMINAL_TYPES:
                _end(event)
                return
    finally:
        closing = getattr(events, "close", None)
        if closing is not None:
            closing()


async def afresh_outputs(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Any]:
    """`fresh_outputs` of an asynchronous stream (closed when this ends)."""
    outputs = FreshOutputs()
    try:
        async for event in events:
            if outputs.fresh(event):
                yield decode_output(event)
            elif event.get("type") in TERMINAL_TYPES:
                _end(event)
                return
    finally:
        closing = getattr(events, "aclose", None)
        if closing is not None:
            await closing()


# as text --------------------------------------------------------------------------------------
def describe_output(event: dict[str, Any]) -> str:
    """An output event as one shows it: a JSON value as compact JSON, text as it is, bytes as
    `<N bytes content_type>`."""
    value = decode_output(event)
    if event.get("truncated"):
        kind = event.get("content_type") or "bytes"
        return f"<{event.get('size', '?')} bytes {kind}, too large for the event>"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes {event.get('content_type') or 'application/octet-stream'}>"
    if event.get("encoding") == "text" and isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def describe_progress(event: dict[str, Any]) -> str:
    """A progress event as one line: `progress 40% page 2/5`."""
    fraction = event.get("fraction")
    head = "progress" if fraction is None else f"progress {100 * float(fraction):.0f}%"
    message = event.get("message")
    return f"{head} {message}" if message else head
