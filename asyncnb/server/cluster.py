"""Connecting the gateway to Dask: an existing scheduler, a cluster factory, or a local cluster.

The local default gives each visible GPU its own worker, pinned with CUDA_VISIBLE_DEVICES and
advertising the resource `GPU=1` (dask-cuda's LocalCUDACluster when the `gpu` extra is
installed, else one Nanny per GPU); `--worker-resources` overrides that, for example to let
CPU workers advertise a GPU in tests.

A cluster the gateway starts (the local one, or `--cluster`'s) is held as an `OwnedCluster`:
when its scheduler stops, the Dask backend has it start a new cluster the same way.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import dask
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster
from distributed.core import Status

from ..contract.settings import GatewaySettings, is_loopback_host
from ..errors import UsageError
from ..storage import Storage

logger = logging.getLogger(__name__)


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


def visible_gpus() -> list[str]:
    """Device ids this process may use: CUDA_VISIBLE_DEVICES, else what NVML counts."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return []


def check_storage_reachable(settings: GatewaySettings, storage: Storage) -> None:
    """Remote workers cannot read this machine's disk, nor any process's memory://."""
    if not settings.scheduler:
        return
    if not storage.shared_across_processes:
        raise UsageError(
            "memory:// storage lives in the gateway process; workers of "
            "--scheduler cannot read it: use a shared folder or s3://"
        )
    host = (
        urlsplit(
            settings.scheduler if "://" in settings.scheduler else f"tcp://{settings.scheduler}"
        ).hostname
        or ""
    )
    if storage.is_local and host and not is_loopback_host(host):
        raise UsageError(
            f"storage {storage.url} is a local folder, which workers of the remote scheduler "
            f"{settings.scheduler} cannot read: use s3:// (or another shared fsspec URL)"
        )


async def start_dask(
    settings: GatewaySettings, storage: Storage
) -> tuple[Any, OwnedCluster | None]:
    """(asynchronous Client, the cluster this gateway owns or None)."""
    check_storage_reachable(settings, storage)
    # A local cluster's scheduler shares the gateway's event loop: keep its sampling light.
    dask.config.set(
        {
            "distributed.admin.system-monitor.interval": "2s",
            "distributed.admin.system-monitor.disk": False,
        }
    )
    if settings.scheduler:
        client = await Client(settings.scheduler, asynchronous=True)
        return client, None
    owned = OwnedCluster(lambda: _start_cluster(settings, storage))
    client = await owned.start()
    logger.info("the gateway's Dask cluster: scheduler at %s", client.scheduler.address)
    return client, owned


async def _start_cluster(settings: GatewaySettings, storage: Storage) -> Any:
    if settings.cluster:
        cluster = load_factory(settings.cluster)()
        if inspect.isawaitable(cluster):
            cluster = await cluster
        return cluster
    return await _local_cluster(settings, storage)


# How long the rest of a cluster whose scheduler stopped may take to close before its
# successor starts (its worker processes are ended with it).
RESTART_CLOSE_TIMEOUT_S = 10.0


class OwnedCluster:
    """The Dask cluster this gateway started, started again the same way when its scheduler
    stops (`restart`, which the Dask backend calls).

    It stands in for the cluster object: `scale`, `close` and any other attribute (`scale_down`,
    `new_spec`, `worker_spec`...) are the current cluster's, so the autoscaler sizes, and the
    gateway's shutdown closes, the new cluster after a restart, never the old one."""

    def __init__(self, start: Callable[[], Awaitable[Any]]) -> None:
        self._start = start
        self.current: Any = None
        self.restarts = 0
        self._closed = False
        self._restarting = False
        self._deferred_scale: int | None = None  # asked for while restarting

    async def start(self) -> Client:
        """Start the cluster; an asynchronous client of it."""
        self.current = await self._start()
        return await Client(self.current, asynchronous=True)

    def __getattr__(self, name: str) -> Any:
        current = self.__dict__.get("current")
        if name.startswith("__") or current is None:
            raise AttributeError(name)
        return getattr(current, name)

    def scale(self, n: int) -> Any:
        if self._restarting:
            self._deferred_scale = n
            return None
        return self.current.scale(n)

    def scheduler_stopped(self) -> bool:
        """Whether the cluster's scheduler has stopped: known where the scheduler object is
        this process's (LocalCluster's, SpecCluster's); otherwise the backend goes by how long
        the scheduler stays unreachable."""
        return not (self._closed or self._restarting) and _scheduler_stopped(self.current)

    async def restart(self) -> Client:
        """Close what is left of the cluster and start a new one, with as many workers as the
        old one was sized to; an asynchronous client of it."""
        if self._closed:
            raise RuntimeError("the gateway is stopping: no new cluster")
        self._restarting = True
        try:
            old = self.current
            size = _spec_size(old)
            await _close_rest(old)
            self.current = await self._start()
            if self._closed:  # the gateway began to stop meanwhile: its close missed this one
                await stop_cluster(self.current)
                raise RuntimeError("the gateway is stopping: no new cluster")
            wanted = self._deferred_scale if self._deferred_scale is not None else size
            if wanted is not None and wanted != _spec_size(self.current):
                scaled = self.current.scale(wanted)
                if inspect.isawaitable(scaled):
                    await scaled
            client = await Client(self.current, asynchronous=True)
        finally:
            self._restarting = False
            self._deferred_scale = None
        self.restarts += 1
        return client

    def close(self) -> Any:
        self._closed = True
        return self.current.close() if self.current is not None else None


def _scheduler_stopped(cluster: Any) -> bool:
    status = getattr(getattr(cluster, "scheduler", None), "status", None)
    return status in (Status.closing, Status.closed, Status.failed)


def _spec_size(cluster: Any) -> int | None:
    spec = getattr(cluster, "worker_spec", None)
    return None if spec is None else len(spec)


async def _close_rest(cluster: Any) -> None:
    """Close a cluster whose scheduler is gone, within `RESTART_CLOSE_TIMEOUT_S`."""
    if _scheduler_stopped(cluster) and hasattr(cluster, "shutdown_scheduler"):
        # Nothing is left to terminate: asking would wait out a connect timeout.
        cluster.shutdown_scheduler = False
    try:
        await stop_cluster(cluster, timeout=RESTART_CLOSE_TIMEOUT_S)
    except Exception:
        logger.warning("closing the stopped Dask cluster failed", exc_info=True)


# A preload of every worker process the gateway starts itself (see the module).
WORKER_SETUP = "asyncnb.runtime.worker_setup"


async def _local_cluster(settings: GatewaySettings, storage: Storage) -> Any:
    gpus = [] if settings.worker_resources else visible_gpus()
    threads = settings.threads_per_worker or 4
    if gpus and storage.shared_across_processes:
        return await _gpu_cluster(gpus[: settings.n_workers or len(gpus)], threads)
    n_workers = (
        settings.n_workers if settings.n_workers is not None else min(2, os.cpu_count() or 1)
    )
    return await LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        # memory:// lives inside one process, so its workers must be threads of this one.
        processes=storage.shared_across_processes,
        resources=settings.worker_resources or None,
        # threads talk in-process (no host); processes only ever on loopback
        host="127.0.0.1" if storage.shared_across_processes else None,
        dashboard_address=None,
        # The scheduler's HTTP server (health, metrics) still starts: on a free loopback port.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0", "dashboard": False},
        preload=[WORKER_SETUP] if storage.shared_across_processes else [],
        asynchronous=True,
    )


async def _gpu_cluster(gpus: list[str], threads: int) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        pass
    else:
        return await LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=",".join(gpus),
            threads_per_worker=threads,
            resources={"GPU": 1},
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            preload=[WORKER_SETUP],
            asynchronous=True,
        )
    workers = {
        f"gpu-{device}": {
            "cls": Nanny,
            "options": {
                "host": "127.0.0.1",
                "nthreads": threads,
                "resources": {"GPU": 1},
                "env": {"CUDA_VISIBLE_DEVICES": device},
                "preload": [WORKER_SETUP],
            },
        }
        for device in gpus
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0", "dashboard": False},
    }
    return await SpecCluster(workers=workers, scheduler=scheduler, asynchronous=True)


def worker_bounds(settings: GatewaySettings, cluster: Any | None) -> dict[str, Any]:
    """[min, max] workers the autoscaler may size the cluster to."""
    if cluster is None:
        return {"min_workers": 0, "max_workers": None}
    if settings.cluster:
        return {"min_workers": settings.min_workers or 0, "max_workers": settings.max_workers}
    initial = len(getattr(cluster, "worker_spec", {}) or {})
    low = settings.min_workers if settings.min_workers is not None else initial
    high = settings.max_workers if settings.max_workers is not None else max(initial, low)
    return {"min_workers": low, "max_workers": high}


CLUSTER_CLOSE_TIMEOUT_S = 20.0


async def stop_cluster(cluster: Any | None, timeout: float = CLUSTER_CLOSE_TIMEOUT_S) -> None:
    """Close the cluster this gateway started (its client is the backend's to close).

    A stop must end: after `timeout` the gateway goes on exiting, and multiprocessing ends the
    worker processes that are left with it."""
    if cluster is None:
        return
    closing = cluster.close()
    if not inspect.isawaitable(closing):
        return
    try:
        await asyncio.wait_for(_awaited(closing), timeout)
    except asyncio.TimeoutError:
        logger.warning("the cluster did not close within %g s", timeout)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
