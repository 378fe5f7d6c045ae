"""What a gateway process builds when it starts, and takes down when it stops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ..contract.settings import GatewaySettings
from ..contract.webhook_policy import WebhookPolicy
from ..engine import Engine, EngineSettings
from ..engine.backends.dask import DaskBackend
from ..gateway import create_asgi_app
from ..gateway.fastpath import StatusFastPath
from ..storage import Storage
from .cluster import start_dask, stop_cluster, worker_bounds


def engine_settings(settings: GatewaySettings, cluster: Any | None) -> EngineSettings:
    return EngineSettings.from_gateway(
        settings,
        webhook_policy=WebhookPolicy(allow=settings.webhook_allow, deny=settings.webhook_deny),
        **worker_bounds(settings, cluster),
    )


def lifespan(
    settings: GatewaySettings,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        storage = Storage(settings.storage, settings.storage_options)
        client, cluster = await start_dask(settings, storage)
        backend = DaskBackend(client)
        engine = Engine(storage, backend, engine_settings(settings, cluster), cluster=cluster)
        await engine.start()
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.close()
            await backend.close()
            await stop_cluster(cluster)

    return run


def gateway_app(settings: GatewaySettings) -> StatusFastPath:
    """The app a gateway process serves: routes, fast path, and this lifespan."""
    return create_asgi_app(settings, lifespan(settings))
