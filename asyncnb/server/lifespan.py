"""What a gateway process builds when it starts, and takes down when it stops.

It is done before uvicorn serves a request, outside uvicorn's lifespan, so that a gateway that
cannot start says why in one line (`GatewayStartFailed`) instead of a traceback and an exit
status of 3.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ..contract.settings import GatewaySettings, is_loopback_host
from ..contract.webhook_policy import WebhookPolicy
from ..engine import Engine, EngineSettings
from ..engine.backends.dask import DaskBackend
from ..engine.lease import Lease
from ..engine.store import JournalLocked
from ..errors import GatewayStartFailed, UsageError
from ..storage import Storage
from .cluster import start_dask, stop_cluster, worker_bounds

logger = logging.getLogger(__name__)


def engine_settings(settings: GatewaySettings, cluster: Any | None) -> EngineSettings:
    policy = WebhookPolicy(
        allow=settings.webhook_allow,
        deny=settings.webhook_deny,
        # A gateway others can reach must not let them aim webhooks at its own network.
        allow_internal=is_loopback_host(settings.host),
    )
    return EngineSettings.from_gateway(
        settings, webhook_policy=policy, **worker_bounds(settings, cluster)
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@asynccontextmanager
async def gateway_engine(
    settings: GatewaySettings,
    lease: Lease | None = None,
    engine_closed: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Engine]:
    """Storage, Dask, the Dask backend and the engine, started; all stopped again on exit.
    `lease`: the storage's lease, held by this gateway (its fencing check). `engine_closed`
    runs once the engine has stopped and written what it owed, before Dask is taken down
    (which can take seconds): the lease is handed over then."""
    step = "open the storage"
    try:
        storage = Storage(settings.storage, settings.storage_options)
        step = "start Dask"
        client, cluster = await start_dask(settings, storage)
    except (UsageError, GatewayStartFailed):
        raise
    except Exception as exc:
        logger.debug("gateway start failed", exc_info=True)
        raise GatewayStartFailed(f"cannot {step} ({settings.storage}): {_one_line(exc)}") from exc
    # A cluster of the gateway's own is started again when its scheduler stops; an external
    # scheduler is only reconnected to.
    backend = DaskBackend(client, restarter=cluster)
    try:
        step = "open the workload store"
        chosen = engine_settings(settings, cluster)
        engine = Engine(storage, backend, chosen, cluster=cluster, lease=lease)
        try:
            step = f"read the storage {storage.url}"
            await engine.start()
        except BaseException:
            await engine.close()
            raise
    except BaseException as exc:
        await backend.close()
        await stop_cluster(cluster)
        if isinstance(exc, JournalLocked):
            raise GatewayStartFailed(holder_of(storage, exc)) from None
        if isinstance(exc, Exception):
            logger.debug("gateway start failed", exc_info=True)
            raise GatewayStartFailed(f"cannot {step}: {_one_line(exc)}") from exc
        raise
    try:
        yield engine
    finally:
        try:
            await engine.close()
            if engine_closed is not None:
                await engine_closed()
        finally:
            await backend.close()
            await stop_cluster(cluster)


def holder_of(storage: Storage, exc: JournalLocked) -> str:
    """Who serves the storage already, where, and what to do about it."""
    from .local import read_runtime_file

    pid = exc.holder_pid
    running = read_runtime_file(storage.url)
    if running is not None and running.pid == pid:
        return (
            f"storage {storage.url} is already served by the gateway at {running.url} "
            f"(pid {pid}): use it (ASYNCNB_GATEWAY={running.url}) or stop it first "
            "(`asyncnb local stop`)"
        )
    return f"storage {storage.url} is already served by another gateway (pid {pid or '?'})"
