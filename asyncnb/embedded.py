"""One gateway per process, started on first use when no ASYNCNB_GATEWAY is set."""

from __future__ import annotations

import atexit
import threading

from .serve import BackgroundGateway
from .settings import GatewaySettings

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


def stop_embedded_gateway() -> None:
    global _gateway
    with _lock:
        if _gateway is not None:
            _gateway.stop()
            _gateway = None
