from __future__ import annotations

import asyncio
from typing import Any

from asyncnb.server.http_protocol import _CoalescingTransport


class _Recorder:
    """Stands in for an asyncio transport: records each write (each would be one send())."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"extra-{name}"


def test_head_and_body_go_out_in_one_write() -> None:
    async def scenario() -> list[bytes]:
        recorder = _Recorder()
        transport = _CoalescingTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert recorder.writes == []
        transport.write(b"{}")
        await asyncio.sleep(0)
        return recorder.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


def test_a_lone_write_leaves_by_the_end_of_the_iteration_and_close_flushes() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], bool]:
        recorder = _Recorder()
        transport = _CoalescingTransport(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        after_iteration = list(recorder.writes)
        transport.write(b"last words")
        transport.close()
        assert transport.get_extra_info("peername") == "extra-peername"
        return after_iteration, recorder.writes, recorder.closed

    after_iteration, writes, closed = asyncio.run(scenario())
    assert after_iteration == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert writes[-1] == b"last words" and closed
