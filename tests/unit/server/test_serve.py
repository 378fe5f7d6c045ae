"""A whole gateway on a thread of this process: memory:// storage, Dask workers as threads."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import pytest

from asyncnb.contract.settings import GatewaySettings
from asyncnb.errors import GatewayStartFailed
from asyncnb.server.serve import BackgroundGateway, listen


def settings(**values: object) -> GatewaySettings:
    chosen: dict[str, object] = {
        "storage": f"memory://serve-{uuid.uuid4().hex}",
        "port": 0,
        "n_workers": 1,
        "token": None,
        "admin_token": None,
    }
    return GatewaySettings(**{**chosen, **values})  # type: ignore[arg-type]


def test_a_gateway_on_a_thread_serves_and_stops() -> None:
    gateway = BackgroundGateway(settings()).start()
    try:
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).json()["status"] == "ok"
    finally:
        gateway.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/healthz", timeout=2)


def test_an_idle_gateway_stops_by_itself() -> None:
    gateway = BackgroundGateway(settings(idle_timeout_s=0.4)).start()
    deadline = time.monotonic() + 30
    while gateway._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gateway._thread.is_alive()


def test_a_taken_port_is_said_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GatewayStartFailed, match=rf"cannot listen on 127.0.0.1:{port}: "):
            listen("127.0.0.1", port)
        with pytest.raises(GatewayStartFailed, match="asyncnb local status"):
            BackgroundGateway(settings(port=port)).start()
