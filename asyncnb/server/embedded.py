"""The gateway a process uses when none is configured (no URL, no `ASYNCNB_GATEWAY`).

By default that is the local gateway of its storage: a process of its own, shared by every
process on that storage (server/local.py), so that a kernel interrupt, a second notebook or a
script without a main guard does not break it. A memory:// storage lives in one process, so
its gateway runs on a thread of this one; `start_gateway(in_process=True)` asks for that too.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

from ..contract.settings import GatewaySettings, default_storage_url
from ..errors import UsageError
from ..storage import Storage
from .local import RuntimeRecord, local_gateway
from .serve import BackgroundGateway

_lock = threading.Lock()
_thread_gateway: BackgroundGateway | None = None
_chosen: GatewaySettings | None = None  # what start_gateway asked for, for later clients


@dataclass(frozen=True)
class GatewayAddress:
    """Where a client finds its gateway, and the token it needs there."""

    url: str
    token: str | None = None
    pid: int | None = None  # the local gateway's process; None for one on a thread of ours
    started: bool = False  # started by this call

    @classmethod
    def of(cls, record: RuntimeRecord, started: bool) -> GatewayAddress:
        return cls(record.url, record.client_token, record.pid, started)


def default_gateway() -> GatewayAddress:
    """The gateway of this process: what `start_gateway` chose, else the local gateway of
    `ASYNCNB_STORAGE` (default ~/.asyncnb/storage), found or started now."""
    with _lock:
        chosen = _chosen
        if _thread_gateway is not None:
            return GatewayAddress(_thread_gateway.url)
    if chosen is None:
        chosen = GatewaySettings(storage=default_storage_url(), token=None, admin_token=None)
    if not Storage(chosen.storage).shared_across_processes:
        return _on_a_thread(chosen)
    # the shape of the cluster matters only to the process that asked for it
    record, started = local_gateway(chosen.storage, chosen if _chosen else None)
    return GatewayAddress.of(record, started)


def _on_a_thread(settings: GatewaySettings) -> GatewayAddress:
    global _thread_gateway
    with _lock:
        if _thread_gateway is None:
            _thread_gateway = BackgroundGateway(settings).start()
            atexit.register(stop_embedded_gateway)
        elif _shape(_thread_gateway.settings) != _shape(settings):
            raise UsageError(
                "the gateway of this process already runs with other settings; restart the "
                "kernel (or process) to change them"
            )
        return GatewayAddress(_thread_gateway.url)


def start_gateway(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    worker_resources: dict[str, float] | None = None,
    storage: str | None = None,
    port: int = 0,
    in_process: bool = False,
) -> GatewayAddress:
    """Choose this process's gateway, and start it (or find it running), before anything
    deploys.

    For example `asyncnb.start_gateway(workers=2, worker_resources={"GPU": 1})` gives CPU
    workers that advertise a GPU, so `gpu=1` APIs run on a machine without one. The local
    gateway of the storage is used unless `in_process` (a gateway on a thread of this process,
    gone with it); one already running on the storage with other settings is refused.
    """
    global _chosen
    settings = GatewaySettings(
        port=port,
        token=None,
        admin_token=None,
        storage=storage or default_storage_url(),
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        worker_resources=dict(worker_resources or {}),
    )
    if in_process or not Storage(settings.storage).shared_across_processes:
        return _on_a_thread(settings)
    record, started = local_gateway(settings.storage, settings, port=port)
    with _lock:
        _chosen = settings
    return GatewayAddress.of(record, started)


def _shape(settings: GatewaySettings) -> tuple[object, ...]:
    return (
        settings.n_workers,
        settings.threads_per_worker,
        settings.worker_resources,
        settings.storage,
    )


def embedded_gateway(settings: GatewaySettings) -> BackgroundGateway:
    """A gateway on a thread of this process with these settings (tests)."""
    _on_a_thread(settings)
    assert _thread_gateway is not None
    return _thread_gateway


def stop_embedded_gateway() -> None:
    """Stop the gateway on a thread of this process, if there is one."""
    global _thread_gateway
    with _lock:
        if _thread_gateway is not None:
            _thread_gateway.stop()
            _thread_gateway = None
