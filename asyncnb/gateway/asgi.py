"""ASGI pieces below any framework: answering with JSON, and refusing deploy bodies over the
gateway's limit before they are buffered."""

from __future__ import annotations

from typing import Any

from .errors import error_answer

# Headers that a request may carry once: two readings of one of them (the fast path took the
# last, FastAPI the first) would let a request mean two things.
SINGLE_HEADERS = frozenset(
    {
        b"authorization",
        b"content-length",
        b"host",
        b"idempotency-key",
        b"prefer",
        b"x-priority",
        b"x-webhook-url",
    }
)


def repeated_header(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first of SINGLE_HEADERS that the request repeats, or None."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in SINGLE_HEADERS:
            if name in seen:
                return name.decode("latin-1")
            seen.add(name)
    return None


async def send_json(
    send: Any, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer an ASGI request with a JSON body, below any framework."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DeployBodyLimit:
    """`PUT /apis/{api}` bodies are read whole by FastAPI: check the size first, and count
    the bytes of a body sent without Content-Length."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "PUT"
            and scope["path"].startswith("/apis/")
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        refused = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen, refused
            message: dict[str, Any] = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                refused = True
                return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if refused and not started:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        answer = error_answer(413, f"deploy body is larger than {self.max_bytes} bytes")
        await send_json(send, answer.status, answer.body, [(b"connection", b"close")])
