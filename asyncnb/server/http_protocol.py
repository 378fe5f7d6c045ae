"""uvicorn's httptools protocol, sending each small response in one `send()`.

uvicorn writes a response's head and body with two `transport.write` calls, and each is a
system call of its own. On loopback under load those calls were the largest single cost of
the gateway (py-spy, docs/benchmarks.md), so the head is held until the body joins it, or
until the end of the current event-loop iteration when no body follows at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending is None:
            self._pending = bytes(data)
            self._loop.call_soon(self._flush)
            return
        joined, self._pending = self._pending + bytes(data), None
        self._transport.write(joined)

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def _flush(self) -> None:
        if self._pending is not None:
            data, self._pending = self._pending, None
            self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = _CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)
