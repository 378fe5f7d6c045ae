"""Shortcuts for the two most frequent requests: `POST /{api}` and polling `GET /{api}/{id}`.

Profiling the gateway under load showed the framework's routing, dependency solving and
response classes costing several times the work itself. This ASGI app wraps the FastAPI
app (outside it, so these requests skip its middleware stack too) and answers the plain
cases directly: a submit runs the same `submit_workload` as the FastAPI route, and a
poll reads the workload from memory. Anything else (an unknown id, a missing or bad token,
`Prefer: wait` on a poll) falls through to the FastAPI routes, which stay the reference
behaviour and the documented API.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from . import jsoncodec
from .names import api_name_problem, is_workload_id

Scope = dict[str, Any]
logger = logging.getLogger("asyncnb.gateway")


class StatusFastPath:
    """`app` is the gateway's FastAPI app; its `state` holds the engine and settings."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if scope["method"] == "GET":
                body = self._answer(scope)
                if body is not None:
                    await send_json(tracked_send, 200, body)
                    return
            elif scope["method"] == "POST" and self._submits(scope):
                await self._submit(scope, receive, tracked_send)
                return
        except Exception:
            # What FastAPI's error handler does for its routes: no traceback to the client.
            logger.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if not started:
                await send_json(send, 500, b'{"detail":"internal error; see the gateway log"}')
            return
        await self.app(scope, receive, send)

    def _submits(self, scope: Scope) -> bool:
        parts = scope["path"].split("/")
        if len(parts) != 2 or api_name_problem(parts[1]):
            return False
        state: Any = self.app.state
        if getattr(state, "engine", None) is None:
            return False
        return _authorized(state.settings, dict(scope["headers"]))

    async def _submit(self, scope: Scope, receive: Any, send: Any) -> None:
        from .engine import EngineError, Unavailable
        from .submission import submit_workload

        state: Any = self.app.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            answer = await submit_workload(
                state.engine, state.settings, scope["path"][1:], headers, _body(receive)
            )
        except EngineError as exc:
            extra = [
                (k.encode(), v.encode()) for k, v in (getattr(exc, "headers", None) or {}).items()
            ]
            if isinstance(exc, Unavailable):
                extra.append((b"retry-after", b"5"))
            body = json.dumps({"detail": exc.detail}).encode()
            await send_json(send, exc.status_code, body, extra)
            return
        except _ClientGone:
            return
        await send_json(
            send,
            answer.status,
            jsoncodec.dumps(answer.body),
            [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()],
        )

    def _answer(self, scope: Scope) -> bytes | None:
        parts = scope["path"].split("/")
        if len(parts) != 3 or not is_workload_id(parts[2]) or api_name_problem(parts[1]):
            return None
        state: Any = self.app.state
        engine = getattr(state, "engine", None)
        if engine is None:
            return None
        headers = dict(scope["headers"])
        if b"prefer" in headers or not _authorized(state.settings, headers):
            return None
        workload = engine.peek(parts[1], parts[2])
        if workload is None:
            return None
        return jsoncodec.dumps(workload.public())


class _ClientGone(Exception):
    pass


async def _body(receive: Any) -> Any:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


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


def _authorized(settings: Any, headers: dict[bytes, bytes]) -> bool:
    if settings.token is None:
        return True
    scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    allowed = [t for t in (settings.token, settings.effective_admin_token) if t]
    return any(secrets.compare_digest(given.strip(), t.encode()) for t in allowed)
