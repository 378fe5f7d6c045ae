"""Reading a submitted body: small ones into memory, large ones streamed to storage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..contract.predictor import payload_problem
from ..engine.aio import within
from ..engine.errors import EngineError, storage_unavailable
from ..storage import Storage
from .errors import HTTPError

logger = logging.getLogger(__name__)


class PayloadTooLarge(HTTPError):
    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class BadPayload(HTTPError):
    def __init__(self, detail: str) -> None:
        super().__init__(400, detail)


class BodyTimeout(HTTPError):
    def __init__(self, detail: str) -> None:
        # the rest of the body may still arrive: the connection cannot be reused (RFC 9110
        # 15.5.9)
        super().__init__(408, detail, {"Connection": "close"})


@dataclass
class Body:
    data: bytes | None  # None when streamed to storage
    size: int

    @property
    def stored(self) -> bool:
        return self.data is None


async def _paced(chunks: AsyncIterator[bytes], timeout_s: float | None) -> AsyncIterator[bytes]:
    """The body's chunks, giving up on a client that pauses longer than `timeout_s`."""
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await within(iterator.__anext__(), timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTimeout(f"no body bytes received for {timeout_s:g} s") from None
        yield chunk


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    timeout_s: float | None = None,
    storage: Storage,
    path: str,
    inline_limit: int,
    max_bytes: int,
    io: Callable[..., Awaitable[Any]],
) -> Body:
    """Buffer up to `inline_limit` bytes, then stream the rest to `path` without holding it."""
    buffered: list[bytes] = []
    size = 0
    chunks = _paced(chunks, timeout_s)
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"payload is larger than max_payload_bytes={max_bytes}")
        buffered.append(chunk)
        if size > inline_limit:
            return await _stream_rest(chunks, buffered, size, storage, path, max_bytes, io)
    return Body(b"".join(buffered), size)


async def _stream_rest(
    chunks: AsyncIterator[bytes],
    buffered: list[bytes],
    size: int,
    storage: Storage,
    path: str,
    max_bytes: int,
    run: Callable[..., Awaitable[Any]],
) -> Body:
    try:
        # Opening and closing may talk to an object store (the last part uploads on close).
        sink: Any = await run(storage.open_binary_writer, path)
        try:
            await run(sink.write, b"".join(buffered))
            buffered.clear()
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"payload is larger than max_payload_bytes={max_bytes}")
                await run(sink.write, chunk)
        finally:
            await run(sink.close)
    except PayloadTooLarge:
        await _remove_partial(run, storage, path)
        raise
    except asyncio.CancelledError:
        await _remove_partial(run, storage, path)
        raise
    except Exception as exc:
        await _remove_partial(run, storage, path)
        if isinstance(exc, (EngineError, HTTPError)):
            raise
        raise storage_unavailable(exc) from exc
    return Body(None, size)


async def _remove_partial(run: Any, storage: Storage, path: str) -> None:
    try:
        await run(storage.delete, path)
    except Exception:
        logger.warning("could not remove the partial payload %s", path)


def check_payload(data: bytes, content_type: str) -> None:
    """Reject bodies the predictor could never decode, before they are accepted."""
    problem = payload_problem(data, content_type)
    if problem:
        raise BadPayload(problem)
