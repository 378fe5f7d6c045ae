"""Connecting the gateway to Dask: an existing scheduler, a cluster factory, or a LocalCluster."""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

import dask
from distributed import Client, LocalCluster

from .settings import GatewaySettings
from .storage import Storage


def load_factory(spec: str) -> Any:
    """`module:callable` → the callable (a Cluster class or a function returning a Cluster)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--cluster {spec!r} must be 'module:callable'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None


async def start_dask(settings: GatewaySettings, storage: Storage) -> tuple[Any, Any | None]:
    """(asynchronous Client, the cluster this gateway owns or None)."""
    # A LocalCluster's scheduler shares the gateway's event loop: keep its sampling light.
    dask.config.set(
        {
            "distributed.admin.system-monitor.interval": "2s",
            "distributed.admin.system-monitor.disk": False,
        }
    )
    if settings.scheduler:
        client = await Client(settings.scheduler, asynchronous=True)
        return client, None
    if settings.cluster:
        cluster = load_factory(settings.cluster)()
        if inspect.isawaitable(cluster):
            cluster = await cluster
        client = await Client(cluster.scheduler_address, asynchronous=True)
        return client, cluster
    n_workers = settings.n_workers or min(2, os.cpu_count() or 1)
    cluster = await LocalCluster(
        n_workers=n_workers,
        threads_per_worker=settings.threads_per_worker or 4,
        # memory:// lives inside one process, so its workers must be threads of this one.
        processes=storage.shared_across_processes,
        resources=settings.worker_resources or None,
        dashboard_address=None,
        asynchronous=True,
    )
    client = await Client(cluster, asynchronous=True)
    return client, cluster


async def stop_dask(client: Any, cluster: Any | None) -> None:
    await client.close()
    if cluster is not None:
        closing = cluster.close()
        if inspect.isawaitable(closing):
            await closing
