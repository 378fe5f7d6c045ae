"""The gateway behind the /asyncnb routes: where it is, its token, one pooled HTTP client."""

from __future__ import annotations

from typing import Any

import httpx

from .gateway_process import GatewayProcess


class Upstream:
    """A managed gateway (`process`) or an external one (`url`), reached with `token`."""

    def __init__(
        self,
        url: str,
        token: str,
        process: GatewayProcess | None = None,
        timeout: float = 120.0,
    ) -> None:
        self._url = url.rstrip("/")
        self.token = token
        self.process = process
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return self.process.url if self.process is not None else self._url

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use so that it belongs to the event loop that serves requests.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=5.0, pool=30.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
            )
        return self._client

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def down_detail(self) -> str:
        """Why the gateway cannot answer now, for a 503."""
        process = self.process
        if process is None:
            return f"the asyncnb gateway at {self.url} is not reachable"
        if process.state == "failed":
            return f"the asyncnb gateway failed to start: {process.failure}"
        if process.state == "stopped":
            return "the asyncnb gateway is stopped"
        return f"the asyncnb gateway is {process.state}; retry shortly"

    async def healthy(self) -> bool:
        try:
            response = await self.client.get(f"{self.url}/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def info(self) -> dict[str, Any]:
        """What `/asyncnb/_gateway` shows (never the token)."""
        info: dict[str, Any] = {"managed": self.process is not None, "url": self.url}
        if self.process is not None:
            info.update(self.process.info())
        info["healthy"] = await self.healthy()
        return info

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
