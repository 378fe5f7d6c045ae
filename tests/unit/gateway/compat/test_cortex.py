"""Cortex's AsyncAPI contract over a real engine in this process (gateway/compat/cortex.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ..test_app import USER, Doubler, Failing, deploy, gateway, until

BASE = "/compat/cortex"


async def retrieved(client: httpx.AsyncClient, api: str, workload_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        answer = await client.get(f"{BASE}/{api}/{workload_id}", headers=USER)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["status"] in ("completed", "failed") else None

    result: dict[str, Any] = await until(probe)
    return result


def test_submit_answers_200_with_an_id_and_retrieve_has_result_and_timestamp() -> None:
    asyncio.run(_test_submit_answers_200_with_an_id_and_retrieve_has_result_and_timestamp())


async def _test_submit_answers_200_with_an_id_and_retrieve_has_result_and_timestamp() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        answer = await client.post(f"{BASE}/double", json={"n": 21}, headers=USER)
        assert answer.status_code == 200 and set(answer.json()) == {"id"}
        workload_id = answer.json()["id"]
        body = await retrieved(client, "double", workload_id)
        assert body["id"] == workload_id and body["status"] == "completed"
        assert body["result"] == {"double": 42}
        assert body["timestamp"].endswith("Z") or "+" in body["timestamp"]
        assert set(body) == {"id", "status", "result", "timestamp"}


def test_failed_and_cancelled_read_failed_without_a_result() -> None:
    asyncio.run(_test_failed_and_cancelled_read_failed_without_a_result())


async def _test_failed_and_cancelled_read_failed_without_a_result() -> None:
    async with gateway() as client:
        await deploy(client, "fails", Failing)
        workload_id = (await client.post(f"{BASE}/fails", json={}, headers=USER)).json()["id"]
        body = await retrieved(client, "fails", workload_id)
        assert body == {"id": workload_id, "status": "failed"}


def test_bad_input_gets_clear_4xx() -> None:
    asyncio.run(_test_bad_input_gets_clear_4xx())


async def _test_bad_input_gets_clear_4xx() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        unknown = await client.get(f"{BASE}/double/{'0' * 32}", headers=USER)
        assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
        malformed = await client.get(f"{BASE}/double/nope", headers=USER)
        assert malformed.status_code == 400 and "detail" in malformed.json()
        no_api = await client.post(f"{BASE}/missing", json={}, headers=USER)
        assert no_api.status_code == 404 and "detail" in no_api.json()
        not_json = await client.post(
            f"{BASE}/double", content=b"{nope", headers={**USER, "content-type": "text/plain"}
        )
        assert not_json.status_code == 400 and "JSON" in not_json.json()["detail"]
        anonymous = await client.post(f"{BASE}/double", json={"n": 1})
        assert anonymous.status_code == 401


def test_an_api_can_leave_the_contract_out_and_the_gateway_can_turn_it_off() -> None:
    asyncio.run(_test_an_api_can_leave_the_contract_out_and_the_gateway_can_turn_it_off())


async def _test_an_api_can_leave_the_contract_out_and_the_gateway_can_turn_it_off() -> None:
    async with gateway() as client:
        await deploy(client, "native", Doubler, compat=[])
        answer = await client.post(f"{BASE}/native", json={"n": 1}, headers=USER)
        assert answer.status_code == 404 and "cortex" in answer.json()["detail"]
    async with gateway(compat=("none",)) as client:
        await deploy(client, "double", Doubler)
        assert (await client.post(f"{BASE}/double", json={}, headers=USER)).status_code == 404
