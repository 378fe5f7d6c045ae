"""The gateway's HTTP protocol: what a connection may cost before it is a request.

uvicorn bounds neither the time nor the size of a request's head, so a client that trickles a
header a byte at a time, or never sends anything, holds a connection for ever, and thousands
of them fill `limit_concurrency` for everyone; a head of megabytes is buffered, at a cost that
grows with the square of its size. Here:

- a connection must send its first byte within `first_byte_timeout_s`, and each request's head
  must be complete within `head_timeout_s` of its first byte (else `408`, closed);
- a head over `max_head_bytes`, or with more than `max_headers` headers, gets `431` as soon as
  it passes the limit, before the parser buffers more;
- one client address holds at most `max_connections_per_client` connections (`503` for the
  next), so one trickling client cannot take every connection; 0 turns that off behind a
  proxy, where every connection comes from the proxy's address.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from .http_protocol import CoalescingHttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    first_byte_timeout_s: float = 10.0
    head_timeout_s: float = 20.0
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_connections_per_client: int = 256


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Unavailable"}


def _refusal(status: int, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """uvicorn's httptools protocol (one `send()` per small response), with the limits above;
    uvicorn's config carries them as `connection_limits`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits: ConnectionLimits = getattr(
            self.config, "connection_limits", ConnectionLimits()
        )
        self._peer: str | None = None
        self._closed_by_us = False
        self._awaiting_head = True  # between requests: the next bytes start a head
        self._head_bytes = 0  # received since the head began
        self._tail = b""  # the last bytes of the head so far: its end may straddle two reads
        self._header_bytes = 0  # of the head's URL and headers, as parsed
        self._header_count = 0
        self._timer: asyncio.TimerHandle | None = None

    # the connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else None
        cap = self._limits.max_connections_per_client
        counts = self._per_client()
        if cap and self._peer is not None and counts.get(self._peer, 0) >= cap:
            self._peer = None  # not counted: it is refused
            self._refuse(503, f"more than {cap} connections from your address")
            return
        if self._peer is not None:
            counts[self._peer] = counts.get(self._peer, 0) + 1
        self._arm(self._limits.first_byte_timeout_s, self._close_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            counts = self._per_client()
            left = counts.get(self._peer, 1) - 1
            if left > 0:
                counts[self._peer] = left
            else:
                counts.pop(self._peer, None)
            self._peer = None
        super().connection_lost(exc)

    def _per_client(self) -> dict[str, int]:
        """Open connections per client address, shared by the connections of one server."""
        counts: dict[str, int] | None = getattr(self.server_state, "asyncnb_per_client", None)
        if counts is None:
            counts = {}
            self.server_state.asyncnb_per_client = counts  # type: ignore[attr-defined]
        return counts

    # the head -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._closed_by_us:
            return
        if self._awaiting_head:
            if not self._head_bytes:
                self._arm(self._limits.head_timeout_s, self._close_slow_head)
            seen = self._tail + data
            ends = b"\r\n\r\n" in seen or b"\n\n" in seen
            if not ends and self._head_bytes + len(data) > self._limits.max_head_bytes:
                # past the limit and no end in sight: refused before the parser buffers it
                self._refuse(431, f"the request head is over {self._limits.max_head_bytes} bytes")
                return
            self._head_bytes += len(data)
            self._tail = seen[-3:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes <= self._limits.max_head_bytes:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if (
            self._header_count <= self._limits.max_headers
            and self._header_bytes <= self._limits.max_head_bytes
        ):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        limits = self._limits
        if self._header_count > limits.max_headers:
            self._refuse(431, f"the request has more than {limits.max_headers} headers")
            return
        if self._header_bytes > limits.max_head_bytes:
            self._refuse(431, f"the request head is over {limits.max_head_bytes} bytes")
            return
        self._awaiting_head = False
        self._head_bytes = 0
        self._tail = b""
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True  # the next bytes, if any, begin the next request's head

    # timers and refusals --------------------------------------------------------------------
    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        if delay and delay > 0:
            self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_idle(self) -> None:
        """Nothing came since the connection opened: it is closed without an answer."""
        if not self._head_bytes and self.cycle is None and not self._closed_by_us:
            self._closed_by_us = True
            self.transport.close()

    def _close_slow_head(self) -> None:
        if self._awaiting_head and not self._closed_by_us:
            self._refuse(
                408, f"the request head was not complete within {self._limits.head_timeout_s:g} s"
            )

    def _refuse(self, status: int, detail: str) -> None:
        self._closed_by_us = True
        self._disarm()
        self.transport.write(_refusal(status, detail))
        self.transport.close()
