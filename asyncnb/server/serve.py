"""Running a gateway: in the foreground (`asyncnb serve`) or on a background thread (tests,
memory:// storage).

The port is bound and the engine started before uvicorn serves, so that a gateway that cannot
start says why in one line. Once it is ready, the gateway records where it listens in its
storage's runtime file (server/local.py). Ctrl-C and SIGTERM stop it in order (requests, then
the engine, then the cluster's workers) and end there: no signal is raised again, and the
caller says in one line how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import uvicorn

from ..contract.settings import GatewaySettings
from ..engine import Engine
from ..engine.lease import Holder, Lease, open_lease
from ..errors import GatewayStartFailed
from ..gateway import create_asgi_app
from ..gateway.standby import StandbyGate
from ..storage import Storage
from .connection_guard import ConnectionLimits, GuardedHttpToolsProtocol
from .lifespan import gateway_engine
from .local import (
    RuntimeRecord,
    read_runtime_file,
    remove_runtime_file,
    shape_of,
    write_runtime_file,
)

logger = logging.getLogger(__name__)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


def _tune_gc() -> None:
    # A gateway holds up to 100k queued and 100k finished workloads for long; with the
    # default thresholds every full collection walks all of them (a 165 ms pause at 100k
    # queued). A larger young generation makes full collections rarer. 10k beat both 50k
    # and the default 700 in interleaved `bench.queue_cost` runs (submit rate at 100k
    # queued: 97-108 % of the rate at 1k, against 74-99 % and 60-74 %).
    gc.collect()
    gc.freeze()  # what startup created (modules, app) is never scanned again
    gc.set_threshold(10_000, 20, 20)


class GatewayServer(uvicorn.Server):
    """uvicorn's server; a stop signal stops it, and is not raised again afterwards."""

    stopped_by: str | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopped_by = self.stopped_by or signal.Signals(sig).name
        super().handle_exit(sig, frame)


class Activity:
    """An ASGI wrapper that notes when the last request came."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = time.monotonic()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.last = time.monotonic()
        await self.app(scope, receive, send)


def listen(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound now: a taken port is said in one line."""
    bind_host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind_host, port))
    except OSError as exc:
        sock.close()
        hint = " (another gateway? `asyncnb local status`)" if exc.errno == errno.EADDRINUSE else ""
        message = f"cannot listen on {bind_host}:{port}: {exc.strerror}{hint}"
        raise GatewayStartFailed(message) from None
    return sock


def _public_base(url: str, host: str) -> str:
    """What endpoints show without `--public-url`: the address served on, and for every
    interface this machine's name (never a client's `Host` header)."""
    if host not in ("0.0.0.0", "", "::"):
        return url
    port = url.rsplit(":", 1)[1]
    return f"http://{socket.getfqdn()}:{port}"


def bound_url(server: uvicorn.Server, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _socket_url(sock: socket.socket, host: str) -> str:
    """`bound_url` of a socket uvicorn does not serve yet."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{sock.getsockname()[1]}"


async def _lease_call(func: Callable[[], T]) -> T:
    return await asyncio.to_thread(func)


def _served_by(storage: Storage, holder: Holder | None) -> str:
    """Who serves the storage already, where, and what to do about it."""
    pid = holder.pid if holder else None
    running = read_runtime_file(storage.url) if storage.is_local else None
    if running is not None and running.pid == pid:
        return (
            f"storage {storage.url} is already served by the gateway at {running.url} "
            f"(pid {pid}): use it (ASYNCNB_GATEWAY={running.url}) or stop it first "
            "(`asyncnb local stop`), or pass --standby to take over when it stops"
        )
    where = f"the gateway at {holder.url}" if holder and holder.url else "another gateway"
    return (
        f"storage {storage.url} is already served by {where} (pid {pid or '?'}); "
        "pass --standby to take over when it stops"
    )


async def _renew_until_lost(lease: Lease) -> None:
    """Renew the lease every third of its TTL; return once it is lost, or about to expire
    unrenewed (storage unreachable): then the gateway stops serving (self-fencing)."""
    margin = min(1.0, lease.ttl_s / 10)
    while True:
        until = lease.held_until
        if until is None and not lease.renew():  # an flock: held while this process lives
            return
        remaining = None if until is None else until - margin - time.monotonic()
        wait = lease.ttl_s / 3 if remaining is None else max(0.0, min(lease.ttl_s / 3, remaining))
        await asyncio.sleep(wait)
        until = lease.held_until
        if until is None:
            continue
        remaining = until - margin - time.monotonic()
        if remaining <= 0:
            return
        try:
            renewed = await asyncio.wait_for(_lease_call(lease.renew), remaining)
        except TimeoutError:
            return
        except Exception as exc:
            logger.warning("cannot renew the lease: %s", _one_line(exc))
            continue
        if not renewed:
            return


class _Active:
    """The engine of a gateway holding its lease, and what goes when it stops."""

    def __init__(self, stack: contextlib.AsyncExitStack, app: Any) -> None:
        self.stack = stack
        self.app = app
        self.watch: asyncio.Future[Any] | None = None
        self.published = False

    async def close(self, storage: Storage) -> None:
        if self.watch is not None:
            self.watch.cancel()
        if self.published:
            remove_runtime_file(storage.url, os.getpid())
            self.published = False
        self.app.state.engine = None
        await self.stack.aclose()


class Gateway:
    """One gateway: its listening socket, its storage lease, its engine while it holds the
    lease, and uvicorn serving its app (behind the standby gate, gateway/standby.py)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.server: GatewayServer | None = None
        self.url = ""

    async def run(self, on_ready: Callable[[str], None] | None = None) -> str | None:
        """Serve until stopped; how it stopped: a signal's name, "idle", or None (`stop`).

        The engine starts only once this gateway holds its storage's lease: a second gateway
        on the same storage refuses to start, or with `--standby` serves as a standby and
        takes over when the lease ends."""
        settings = self.settings
        sock = listen(settings.host, settings.port)
        try:
            storage, lease = await self._lease(sock)
            try:
                held = await _lease_call(lease.acquire)
            except Exception as exc:
                message = f"cannot read the storage {storage.url} (its lease): {_one_line(exc)}"
                raise GatewayStartFailed(message) from exc
            if not held and not settings.standby:
                holder = await _lease_call(lease.holder)
                raise GatewayStartFailed(_served_by(storage, holder))
            try:
                return await self._serve(sock, storage, lease, held, on_ready)
            finally:
                await _lease_call(lease.release)
        finally:
            sock.close()

    async def _lease(self, sock: socket.socket) -> tuple[Storage, Lease]:
        settings = self.settings
        try:
            storage = Storage(settings.storage, settings.storage_options)
        except Exception as exc:
            message = f"cannot open the storage ({settings.storage}): {_one_line(exc)}"
            raise GatewayStartFailed(message) from exc
        url = settings.public_url or _public_base(_socket_url(sock, settings.host), settings.host)
        return storage, open_lease(storage, url, settings.lease_ttl_s)

    async def _serve(
        self,
        sock: socket.socket,
        storage: Storage,
        lease: Lease,
        held: bool,
        on_ready: Callable[[str], None] | None,
    ) -> str | None:
        settings = self.settings
        app = create_asgi_app(settings)
        gate = StandbyGate(app, retry_after_s=math.ceil(lease.poll_s))
        activity = Activity(gate)
        self.server = server = GatewayServer(_config(activity, settings))
        active: _Active | None = None
        # renewed from the moment it is held: starting Dask can take longer than the TTL
        renewing: asyncio.Future[None] | None = None
        if held:  # as before: a gateway that cannot start its engine fails before serving
            renewing = asyncio.ensure_future(_renew_until_lost(lease))
            try:
                active = await self._activate(app, gate, activity, lease)
            except BaseException:
                renewing.cancel()
                raise
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    await task
                    raise GatewayStartFailed("the gateway stopped while starting")
                await asyncio.sleep(0.02)
            self.url = bound_url(server, settings.host)
            app.state.base_url = settings.public_url or _public_base(self.url, settings.host)
            if active is not None:
                active.published = self._publish(storage)
                if on_ready is not None:
                    on_ready(self.url)
            else:
                try:
                    holder = await _lease_call(lease.holder)
                except Exception:
                    holder = None  # the storage did not answer: the polls below retry
                gate.standby(holder.url if holder else None)
                logger.warning(
                    "standby at %s (storage %s is served by %s)",
                    self.url,
                    storage.url,
                    (holder.url if holder else None) or "another gateway",
                )
            while not task.done():
                if active is None:
                    if not await self._wait_for_lease(task, lease, gate):
                        break
                    logger.warning(
                        "took over storage %s (lease epoch %s)", storage.url, lease.epoch
                    )
                    renewing = asyncio.ensure_future(_renew_until_lost(lease))
                    active = await self._activate(app, gate, activity, lease)
                    active.published = self._publish(storage)
                    if on_ready is not None:
                        on_ready(self.url)
                    continue
                assert renewing is not None
                await asyncio.wait([task, renewing], return_when=asyncio.FIRST_COMPLETED)
                if renewing.done() and not task.done():
                    # self-fencing: no accepting, dispatching or finishing without the lease
                    logger.error("lost the lease of storage %s: standing by", storage.url)
                    gate.standby(None)
                    await active.close(storage)
                    active = None
                    await _lease_call(lease.release)
            await task
            return server.stopped_by
        finally:
            if renewing is not None:
                renewing.cancel()
            gate.standby(None)
            if not task.done():
                server.should_exit = True
                await asyncio.wait([task])
            if active is not None:
                await active.close(storage)

    async def _activate(
        self, app: Any, gate: StandbyGate, activity: Activity, lease: Lease
    ) -> _Active:
        """Start the engine (recovery, dispatch); the lease is held."""
        stack = contextlib.AsyncExitStack()

        async def hand_over() -> None:
            # the engine has stopped: a standby may take over while Dask is taken down
            await _lease_call(lease.release)

        engine = await stack.enter_async_context(
            gateway_engine(self.settings, lease, engine_closed=hand_over)
        )
        app.state.engine = engine
        active = _Active(stack, app)
        if self.settings.idle_timeout_s:
            active.watch = asyncio.ensure_future(self._stop_when_idle(engine, activity))
        gate.activate()
        return active

    async def _wait_for_lease(
        self, task: asyncio.Future[Any], lease: Lease, gate: StandbyGate
    ) -> bool:
        """Poll the lease until this gateway holds it (True) or stops serving (False)."""
        while not task.done():
            try:
                if await _lease_call(lease.acquire):
                    return True
                holder = await _lease_call(lease.holder)
                gate.standby(holder.url if holder else None)
            except Exception as exc:
                logger.warning("cannot read the lease: %s", _one_line(exc))
            await asyncio.wait([task], timeout=lease.poll_s)
        return False

    def _publish(self, storage: Storage) -> bool:
        """Record where this gateway listens, for the processes that share its storage."""
        if not storage.shared_across_processes:
            return False  # memory:// lives in this process: nobody else can share it
        settings = self.settings
        write_runtime_file(
            RuntimeRecord(
                url=self.url,
                pid=os.getpid(),
                storage=storage.url,
                token=settings.token,
                admin_token=settings.admin_token,
                started_at=time.time(),
                idle_timeout_s=settings.idle_timeout_s,
                shape=shape_of(settings),
            )
        )
        return True

    async def _stop_when_idle(self, engine: Engine, activity: Activity) -> None:
        timeout = float(self.settings.idle_timeout_s or 0)
        while True:
            await asyncio.sleep(min(30.0, timeout / 4))
            idle = time.monotonic() - activity.last
            if idle >= timeout and not engine.unfinished and self.server is not None:
                logger.warning("no request for %.0f s and no unfinished work: stopping", idle)
                self.server.stopped_by = "idle"
                self.server.should_exit = True
                return

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def _config(app: Any, settings: GatewaySettings) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="off",  # the engine is started before uvicorn serves (see the module)
        timeout_keep_alive=30,
        limit_concurrency=4096,
        http=GuardedHttpToolsProtocol,
        access_log=False,
        backlog=2048,
        timeout_graceful_shutdown=10,  # a stop ends even with a client that will not leave
    )
    config.connection_limits = ConnectionLimits(  # type: ignore[attr-defined]
        first_byte_timeout_s=settings.first_byte_timeout_s,
        head_timeout_s=settings.head_timeout_s,
        max_head_bytes=settings.max_head_bytes,
        max_headers=settings.max_headers,
        max_connections_per_client=settings.max_connections_per_client,
    )
    return config


async def serve(
    settings: GatewaySettings, on_ready: Callable[[str], None] | None = None
) -> str | None:
    """Serve in the foreground until stopped; how it stopped (see `Gateway.run`)."""
    _tune_gc()  # this process is the gateway (never done for one on a thread of a kernel)
    return await Gateway(settings).run(on_ready)


class BackgroundGateway:
    """A gateway on a daemon thread with its own event loop (tests, memory:// storage)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.url = ""
        self._gateway = Gateway(settings)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="asyncnb-gateway", daemon=True)

    def start(self, timeout: float = 120.0) -> BackgroundGateway:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise GatewayStartFailed(f"the gateway did not start within {timeout:g} s")
        if self._error is not None:
            if isinstance(self._error, GatewayStartFailed):
                raise self._error
            raise GatewayStartFailed(f"the gateway could not start: {self._error}")
        return self

    def _run(self) -> None:
        def ready(url: str) -> None:
            self.url = url
            self._ready.set()

        try:
            asyncio.run(self._gateway.run(ready))
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._gateway.stop()
        self._thread.join(timeout)
