"""The server extension app: one managed gateway per Jupyter server, and the /asyncnb routes."""

from __future__ import annotations

import os
import secrets
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join

from .config import AsyncNB
from .gateway_process import GatewayProcess, free_port
from .handlers import SETTINGS_KEY, default_handlers
from .keys import refuse_keys_elsewhere
from .upstream import Upstream

ENV_GATEWAY = "ASYNCNB_GATEWAY"
ENV_TOKEN = "ASYNCNB_TOKEN"
# Set by the extension for its child, from c.AsyncNB; inherited values would override nothing
# but could leak a user's own gateway settings into the managed one.
_CHILD_ENV_DROPPED = (
    ENV_GATEWAY,
    ENV_TOKEN,
    "ASYNCNB_ADMIN_TOKEN",
    "ASYNCNB_STORAGE",
)


class AsyncNBJupyter(ExtensionApp):
    """Runs an asyncnb gateway for this Jupyter server and serves it under /asyncnb.

    Kernels of the server get ASYNCNB_GATEWAY and ASYNCNB_TOKEN, so `%%async_api` deploys to
    that gateway; the APIs outlive the kernels. Colleagues call them through the server's URL
    with asyncnb API keys that the owner creates; a key reaches the workload routes of its
    APIs and nothing else of the server (keys.py).
    """

    name = "asyncnb_jupyter"
    description = "asyncnb: asynchronous inference APIs served by this Jupyter server"
    load_other_extensions = True
    classes = [*ExtensionApp.classes, AsyncNB]

    asyncnb: AsyncNB
    upstream: Upstream
    gateway: GatewayProcess | None = None
    _saved_env: dict[str, str | None]

    def initialize_settings(self) -> None:
        self.asyncnb = AsyncNB(parent=self)
        for problem in self.asyncnb.problems():
            self.log.error("asyncnb: %s", problem)
        self._saved_env = {name: os.environ.get(name) for name in (ENV_GATEWAY, ENV_TOKEN)}
        url, token = self.asyncnb.gateway_url, self.asyncnb.gateway_token
        if not url and os.environ.get(ENV_GATEWAY):
            # The server was started pointing at a gateway (a team's, say): kernels keep
            # deploying there, and /asyncnb serves it, rather than a second gateway appearing.
            url, token = os.environ[ENV_GATEWAY], os.environ.get(ENV_TOKEN, "")
        if url:
            self.upstream = Upstream(url, token, timeout=self.asyncnb.request_timeout)
            self.log.info("asyncnb: using the gateway at %s", self.upstream.url)
        else:
            token = secrets.token_urlsafe(32)
            self.gateway = GatewayProcess(
                self._serve_arguments,
                self._child_env(token),
                free_port(),
                self.log,
                check_interval=self.asyncnb.check_interval,
                start_timeout=self.asyncnb.start_timeout,
                stop_timeout=self.asyncnb.stop_timeout,
                max_start_failures=self.asyncnb.max_start_failures,
                on_port_change=lambda _port: self._export_env(),
            )
            self.upstream = Upstream(
                "", token, process=self.gateway, timeout=self.asyncnb.request_timeout
            )
            if self.asyncnb.problems():
                self.gateway.state = "failed"
                self.gateway.failure = "; ".join(self.asyncnb.problems())
        self._export_env()
        self.settings[SETTINGS_KEY] = self.upstream
        # An asyncnb key on any route but the workload routes: 403, before Jupyter's auth.
        if self.serverapp is not None:
            refuse_keys_elsewhere(self.serverapp.identity_provider, self.log)

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Started once the event loop runs and the server's port is final (for --public-url).
        if self.gateway is not None and self.gateway.state == "stopped":
            self.gateway.start()

    async def stop_extension(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        await self.upstream.aclose()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # internals ------------------------------------------------------------------------------
    def _serve_arguments(self, port: int) -> list[str]:
        public_url = self.asyncnb.public_url
        if not public_url and self.serverapp is not None:
            public_url = url_path_join(self.serverapp.connection_url, "asyncnb")
        return self.asyncnb.serve_arguments(port, public_url.rstrip("/"))

    def _child_env(self, token: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROPPED}
        # The token travels in the environment, which other users cannot read (argv they can).
        env[ENV_TOKEN] = token
        env["ASYNCNB_STORAGE"] = self.asyncnb.storage_url()
        return env

    def _export_env(self) -> None:
        """Point kernels at the gateway: new ones through os.environ, running ones on restart."""
        env = {ENV_GATEWAY: self.upstream.url, ENV_TOKEN: self.upstream.token}
        if not self.upstream.token:
            env.pop(ENV_TOKEN)
            os.environ.pop(ENV_TOKEN, None)
        os.environ.update(env)
        manager = getattr(self.serverapp, "kernel_manager", None)
        if manager is not None and hasattr(manager, "update_env"):
            for kernel_id in list(manager.list_kernel_ids()):
                manager.update_env(kernel_id=kernel_id, env=env)
