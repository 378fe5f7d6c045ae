"""`PATCH /apis/{api}` (new scaling options for a running API, no new version) and the
`stats` of the API record, through the gateway's ASGI app over a real engine in this process
(the fake backend, chunks run by the worker runtime on a thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from .test_app import ADMIN, USER, Doubler, assert_error, deploy, finished, gateway_and_engine


def gateway() -> Any:
    """An HTTP client of a gateway (user token 'usr', admin token 'adm'), and its engine."""
    return gateway_and_engine(token="usr", admin_token="adm")


def run(scenario: Any) -> None:
    asyncio.run(scenario())


def test_patch_changes_the_bounds_of_the_running_version() -> None:
    async def scenario() -> None:
        async with gateway() as (client, engine):
            await deploy(client, "double", Doubler, min_replicas=1, max_replicas=4)
            engine.apis["double"].desired_workers = 3
            answer = await client.patch(
                "/apis/double", json={"min_replicas": 0, "max_replicas": 2}, headers=ADMIN
            )
            assert answer.status_code == 200, answer.text
            record = answer.json()
            assert record["name"] == "double" and record["version"] == 1  # no new version
            assert (record["options"]["min_replicas"], record["options"]["max_replicas"]) == (
                0,
                2,
            )
            assert record["desired_workers"] == 2  # the autoscaler starts within the bounds
            assert record["options"]["webhook_secret"] == "***"
            assert "stats" in record
            # persisted in the spec: what a restart reads back
            spec = engine.storage.read_json(engine.storage.spec_path("double"))
            assert spec["version"] == 1 and spec["options"]["max_replicas"] == 2
            shown = (await client.get("/double", headers=USER)).json()
            assert shown["options"]["max_replicas"] == 2
            # the API still serves
            submitted = await client.post("/double", json={"n": 4}, headers=USER)
            done = await finished(client, "double", submitted.json()["id"])
            assert done["result"] == {"double": 8}
            # other autoscaling options too, one at a time
            answer = await client.patch(
                "/apis/double", json={"target_in_flight": 3.5}, headers=ADMIN
            )
            assert answer.json()["options"]["target_in_flight"] == 3.5
            assert answer.json()["options"]["max_replicas"] == 2  # kept

    run(scenario)


def test_patch_validates_like_a_deploy() -> None:
    async def scenario() -> None:
        async with gateway() as (client, engine):
            await deploy(client, "double", Doubler, max_replicas=4)

            async def patch(body: Any) -> httpx.Response:
                return await client.patch("/apis/double", json=body, headers=ADMIN)

            detail = assert_error(await patch({"min_replicas": 5}), 422)
            assert isinstance(detail, list)
            assert "min_replicas must not exceed max_replicas" in str(detail)
            detail = assert_error(await patch({"max_replicas": 0}), 422)
            assert detail[0]["loc"] == ["body", "max_replicas"]
            detail = assert_error(await patch({"min_replicas": "several"}), 422)
            assert detail[0]["loc"] == ["body", "min_replicas"]
            detail = assert_error(await patch({"gpu": 1, "max_concurrency": 2}), 422)
            assert detail.startswith("not a scaling option: gpu, max_concurrency")
            detail = assert_error(await patch({"no_such_option": 1}), 422)
            assert "not a scaling option: no_such_option" in detail
            assert_error(await patch([1, 2]), 422)
            bad_json = await client.patch(
                "/apis/double",
                content=b"{nope",
                headers={**ADMIN, "Content-Type": "application/json"},
            )
            assert_error(bad_json, 422)
            # nothing changed
            options = engine.apis["double"].options
            assert (options.min_replicas, options.max_replicas) == (1, 4)
            # an empty change changes nothing, and says so with the record
            same = await patch({})
            assert same.status_code == 200 and same.json()["options"]["max_replicas"] == 4

    run(scenario)


def test_patch_needs_the_admin_token_and_a_deployed_api() -> None:
    async def scenario() -> None:
        async with gateway() as (client, _engine):
            await deploy(client, "double", Doubler)
            body = {"max_replicas": 3}
            assert_error(await client.patch("/apis/double", json=body), 401)
            assert_error(await client.patch("/apis/double", json=body, headers=USER), 403)
            detail = assert_error(
                await client.patch("/apis/missing", json=body, headers=ADMIN), 404
            )
            assert "missing" in detail
            assert_error(await client.patch("/apis/Bad_Name", json=body, headers=ADMIN), 404)

    run(scenario)


def test_the_api_record_carries_throughput_and_latency() -> None:
    async def scenario() -> None:
        async with gateway() as (client, _engine):
            await deploy(client, "double", Doubler)
            empty = (await client.get("/double", headers=USER)).json()["stats"]
            assert empty["finished"] == 0 and empty["latency_p50_s"] is None
            ids = [
                (await client.post("/double", json={"n": n}, headers=USER)).json()["id"]
                for n in range(5)
            ]
            for workload_id in ids:
                await finished(client, "double", workload_id)
            stats = (await client.get("/double", headers=USER)).json()["stats"]
            assert stats["window_s"] == 60 and stats["finished"] == stats["completed"] == 5
            assert stats["completed_per_s"] == round(5 / 60, 3)
            assert 0 <= stats["latency_p50_s"] <= stats["latency_p95_s"] < 10
            listed = (await client.get("/apis", headers=USER)).json()["apis"]
            assert listed[0]["stats"]["completed"] == 5

    run(scenario)


def test_the_openapi_schema_documents_the_route_and_the_stats() -> None:
    async def scenario() -> None:
        async with gateway() as (client, _engine):
            schema = (await client.get("/openapi.json", headers=USER)).json()
            patch = schema["paths"]["/apis/{api}"]["patch"]
            assert {"200", "401", "403", "404", "422"} <= set(patch["responses"])
            record = schema["components"]["schemas"]["APIRecord"]
            assert "stats" in record["properties"]
            assert "latency_p95_s" in schema["components"]["schemas"]["FinishStats"]["properties"]

    run(scenario)
