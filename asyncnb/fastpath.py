"""A shortcut for the most frequent request: polling `GET /{api}/{id}` of a workload in memory.

Profiling the gateway under load showed the framework's routing, dependency solving and
response classes costing several times the lookup itself. This ASGI middleware answers the
plain case directly; anything else (an unknown id, a bad token, `Prefer: wait`) falls through
to the FastAPI route, which stays the reference behaviour and the documented API.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from .names import api_name_problem, is_workload_id

Scope = dict[str, Any]


class StatusFastPath:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self._answer(scope)
            if body is not None:
                await send_json(send, 200, body)
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> bytes | None:
        parts = scope["path"].split("/")
        if len(parts) != 3 or not is_workload_id(parts[2]) or api_name_problem(parts[1]):
            return None
        state: Any = getattr(scope.get("app"), "state", None)
        engine = getattr(state, "engine", None)
        if engine is None:
            return None
        headers = dict(scope["headers"])
        if b"prefer" in headers or not _authorized(state.settings, headers):
            return None
        workload = engine.peek(parts[1], parts[2])
        if workload is None:
            return None
        return json.dumps(workload.public(), separators=(",", ":")).encode()


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
