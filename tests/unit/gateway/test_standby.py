"""The standby gate: what a gateway answers while another one holds its storage's lease."""

from __future__ import annotations

import asyncio

import httpx

from asyncnb.contract.settings import GatewaySettings
from asyncnb.gateway import create_asgi_app
from asyncnb.gateway.standby import StandbyGate


def test_a_standby_answers_503_but_is_alive_and_passes_through_once_active() -> None:
    asyncio.run(scenario())


async def scenario() -> None:
    gate = StandbyGate(create_asgi_app(GatewaySettings(storage="memory://standby")), 2)
    gate.standby("http://active:8765")
    transport = httpx.ASGITransport(app=gate)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "standby", "active": "http://active:8765"}
        live = await client.get("/livez")
        assert live.status_code == 200 and live.json() == {"status": "standby"}
        requests = [("POST", "/echo"), ("GET", "/apis"), ("GET", "/echo/x" * 2), ("POST", "/livez")]
        for method, path in requests:
            answer = await client.request(method, path, json={"a": 1})
            assert answer.status_code == 503, path
            assert answer.headers["retry-after"] == "2"
            assert "standby" in answer.json()["detail"]
        gate.activate()
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert (await client.get("/livez")).json() == {"status": "ok"}
        gate.standby(None)
        assert (await client.get("/healthz")).json() == {"status": "standby", "active": None}
