"""Running a gateway: in the foreground (`asyncnb serve`) or on a background thread (embedded)."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable

import uvicorn

from ..contract.settings import GatewaySettings
from .http_protocol import CoalescingHttpToolsProtocol
from .lifespan import gateway_app


def _tune_gc() -> None:
    # A gateway holds up to 100k queued and 100k finished workloads for long; with the
    # default thresholds every full collection walks all of them (a 165 ms pause at 100k
    # queued). A larger young generation makes full collections rarer. 10k beat both 50k
    # and the default 700 in interleaved `bench.queue_cost` runs (submit rate at 100k
    # queued: 97-108 % of the rate at 1k, against 74-99 % and 60-74 %).
    gc.collect()
    gc.freeze()  # what startup created (modules, app) is never scanned again
    gc.set_threshold(10_000, 20, 20)


def _server(settings: GatewaySettings) -> uvicorn.Server:
    config = uvicorn.Config(
        gateway_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_keep_alive=30,
        limit_concurrency=4096,
        http=CoalescingHttpToolsProtocol,
        access_log=False,
        backlog=2048,
    )
    return uvicorn.Server(config)


def bound_url(server: uvicorn.Server, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


async def serve(settings: GatewaySettings, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until the process is told to stop; `on_ready(url)` once the port is bound."""
    _tune_gc()  # this process is the gateway (never done for the embedded one in a kernel)
    server = _server(settings)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the gateway stopped while starting")
        await asyncio.sleep(0.05)
    if on_ready is not None:
        on_ready(bound_url(server, settings.host))
    await task


class BackgroundGateway:
    """A gateway on a daemon thread with its own event loop (notebooks, scripts, tests)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.url = ""
        self._server = _server(settings)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="asyncnb-gateway", daemon=True)

    def start(self, timeout: float = 120.0) -> BackgroundGateway:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the embedded gateway did not start within {timeout:g} s")
        if self._error is not None or not self.url:
            reason = self._error or "see the log above"
            raise RuntimeError(f"the embedded gateway failed to start: {reason}")
        return self

    def _run(self) -> None:
        async def main() -> None:
            task = asyncio.ensure_future(self._server.serve())
            while not self._server.started and not task.done():
                await asyncio.sleep(0.05)
            if self._server.started:
                self.url = bound_url(self._server, self.settings.host)
            self._ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
