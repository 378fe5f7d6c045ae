"""One gateway per process, started on first use when no ASYNCNB_GATEWAY is set."""

from __future__ import annotations

import atexit
import threading

from ..contract.settings import GatewaySettings
from ..errors import UsageError
from .serve import BackgroundGateway

_lock = threading.Lock()
_gateway: BackgroundGateway | None = None


def embedded_gateway(settings: GatewaySettings | None = None) -> BackgroundGateway:
    """The process's embedded gateway (loopback, free port, LocalCluster), started once."""
    global _gateway
    with _lock:
        if _gateway is None:
            settings = settings or GatewaySettings(port=0, token=None, admin_token=None)
            _gateway = BackgroundGateway(settings).start()
            atexit.register(stop_embedded_gateway)
        return _gateway


def start_gateway(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    worker_resources: dict[str, float] | None = None,
    storage: str | None = None,
    port: int = 0,
) -> BackgroundGateway:
    """Start this process's embedded gateway with these settings, before anything deploys.

    For example `asyncnb.start_gateway(workers=2, worker_resources={"GPU": 1})` gives CPU
    workers that advertise a GPU, so `gpu=1` APIs run on a machine without one.
    """
    settings = GatewaySettings(
        port=port,
        token=None,
        admin_token=None,
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        worker_resources=dict(worker_resources or {}),
    )
    if storage:
        settings.storage = storage
    with _lock:
        started = _gateway
    if started is not None:
        if _shape(started.settings) != _shape(settings):
            raise UsageError(
                "the embedded gateway already runs with other settings; restart the kernel "
                "(or process) to change them"
            )
        return started
    return embedded_gateway(settings)


def _shape(settings: GatewaySettings) -> tuple[object, ...]:
    return (
        settings.n_workers,
        settings.threads_per_worker,
        settings.worker_resources,
        settings.storage,
    )


def stop_embedded_gateway() -> None:
    global _gateway
    with _lock:
        if _gateway is not None:
            _gateway.stop()
            _gateway = None
