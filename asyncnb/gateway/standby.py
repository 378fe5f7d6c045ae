"""What a gateway answers while it does not hold its storage's lease (engine/lease.py).

A standby serves HTTP but has no engine: `GET /healthz` answers `503 {"status": "standby",
"active": <url or null>}` (a load balancer sends it nothing), `GET /livez` answers `200` (a
liveness probe leaves it running), and every other route `503` with `Retry-After`. Once it
holds the lease the requests go through to the gateway's app; `GET /livez` stays `200`.
"""

from __future__ import annotations

import json
from typing import Any

from .asgi import send_json


class StandbyGate:
    """An ASGI wrapper outside the gateway's app; `active` is set while the lease is held."""

    def __init__(self, app: Any, retry_after_s: int = 1) -> None:
        self.app = app
        self.active = False
        self.active_url: str | None = None  # the holder's URL, while on standby
        self.retry_after_s = max(1, retry_after_s)

    def standby(self, active_url: str | None) -> None:
        self.active, self.active_url = False, active_url

    def activate(self) -> None:
        self.active, self.active_url = True, None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if self.active or scope["type"] != "lifespan":
                await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/livez" and scope["method"] in ("GET", "HEAD"):
            status = "ok" if self.active else "standby"
            await send_json(send, 200, json.dumps({"status": status}).encode())
            return
        if self.active:
            await self.app(scope, receive, send)
            return
        retry = [(b"retry-after", str(self.retry_after_s).encode())]
        if path == "/healthz":
            body = {"status": "standby", "active": self.active_url}
            await send_json(send, 503, json.dumps(body).encode(), retry)
            return
        where = f" (active: {self.active_url})" if self.active_url else ""
        detail = f"this gateway is a standby{where}; retry later"
        await send_json(send, 503, json.dumps({"detail": detail}).encode(), retry)
