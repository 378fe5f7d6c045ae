"""Replicate's HTTP API v1 over a real engine in this process (gateway/compat/replicate.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ..test_app import ADMIN, GATE, USER, Doubler, Failing, Gated, deploy, gateway, until

BASE = "/compat/replicate/v1"
FIELDS = {
    "id",
    "model",
    "version",
    "status",
    "input",
    "output",
    "error",
    "logs",
    "metrics",
    "created_at",
    "started_at",
    "completed_at",
    "urls",
    "source",
    "data_removed",
}


class Talker:
    def predict(self, payload: Any) -> Any:
        print("hello from", payload["who"])
        return payload["who"].upper()


def replicate_gateway(**settings: Any) -> Any:
    return gateway(compat=("replicate",), **settings)


async def finished(client: httpx.AsyncClient, pid: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        answer = await client.get(f"{BASE}/predictions/{pid}", headers=USER)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["status"] in ("succeeded", "failed", "canceled") else None

    result: dict[str, Any] = await until(probe)
    return result


def test_create_by_version_and_by_model_then_get() -> None:
    asyncio.run(_test_create_by_version_and_by_model_then_get())


async def _test_create_by_version_and_by_model_then_get() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)
        created = await client.post(
            f"{BASE}/predictions", json={"version": "double", "input": {"n": 21}}, headers=USER
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert set(body) == FIELDS
        assert body["id"].startswith("double-") and len(body["id"]) == len("double-") + 32
        assert body["status"] in ("starting", "processing", "succeeded")
        assert body["input"] == {"n": 21} and body["model"] == "asyncnb/double"
        assert body["version"] == "double:1"
        assert body["urls"]["get"].endswith(f"{BASE}/predictions/{body['id']}")
        assert body["urls"]["cancel"] == body["urls"]["get"] + "/cancel"
        done = await finished(client, body["id"])
        assert done["status"] == "succeeded" and done["output"] == {"double": 42}
        assert done["error"] is None and done["completed_at"] and done["started_at"]
        assert done["metrics"]["predict_time"] >= 0
        by_model = await client.post(
            f"{BASE}/models/acme/double/predictions", json={"input": {"n": 2}}, headers=USER
        )
        assert by_model.status_code == 201, by_model.text
        assert (await finished(client, by_model.json()["id"]))["output"] == {"double": 4}
        pinned = await client.post(
            f"{BASE}/predictions",
            json={"version": "acme/double:1", "input": {"n": 1}},
            headers=USER,
        )
        assert pinned.status_code == 201, pinned.text


def test_prefer_wait_answers_the_finished_prediction_or_starting() -> None:
    asyncio.run(_test_prefer_wait_answers_the_finished_prediction_or_starting())


async def _test_prefer_wait_answers_the_finished_prediction_or_starting() -> None:
    GATE.clear()
    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "gated", Gated)
        waited = await client.post(
            f"{BASE}/models/x/double/predictions",
            json={"input": {"n": 5}},
            headers={**USER, "Prefer": "wait=10"},
        )
        assert waited.status_code == 201 and waited.json()["status"] == "succeeded"
        assert waited.json()["output"] == {"double": 10}
        assert waited.headers["preference-applied"] == "wait=10"
        ran_out = await client.post(
            f"{BASE}/models/x/gated/predictions",
            json={"input": {"k": 1}},
            headers={**USER, "Prefer": "wait=1"},
        )
        assert ran_out.status_code == 201 and ran_out.json()["status"] == "starting"
        # a GET tells queued from running
        polled = await client.get(f"{BASE}/predictions/{ran_out.json()['id']}", headers=USER)
        assert polled.json()["status"] in ("starting", "processing")
        GATE.set()
        assert (await finished(client, ran_out.json()["id"]))["output"] == {"k": 1}
        for bad in ("wait=0", "wait=61", "wait=1.5", "wait=x"):
            answer = await client.post(
                f"{BASE}/models/x/double/predictions",
                json={"input": {"n": 1}},
                headers={**USER, "Prefer": bad},
            )
            assert answer.status_code == 400 and "Prefer" in answer.json()["detail"], bad


def test_failed_canceled_and_cancel_of_a_finished_one() -> None:
    asyncio.run(_test_failed_canceled_and_cancel_of_a_finished_one())


async def _test_failed_canceled_and_cancel_of_a_finished_one() -> None:
    GATE.clear()
    async with replicate_gateway() as client:
        await deploy(client, "fails", Failing)
        await deploy(client, "gated", Gated)
        failed = await client.post(
            f"{BASE}/predictions", json={"version": "fails", "input": {}}, headers=USER
        )
        done = await finished(client, failed.json()["id"])
        assert done["status"] == "failed" and done["output"] is None
        assert "ZeroDivisionError" in done["error"] and "no luck" in done["error"]
        running = (
            await client.post(
                f"{BASE}/predictions", json={"version": "gated", "input": {}}, headers=USER
            )
        ).json()["id"]
        queued = (
            await client.post(
                f"{BASE}/predictions", json={"version": "gated", "input": {}}, headers=USER
            )
        ).json()["id"]
        canceled = await client.post(f"{BASE}/predictions/{queued}/cancel", headers=USER)
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert (await finished(client, queued))["status"] == "canceled"
        GATE.set()
        assert (await finished(client, running))["status"] == "succeeded"
        again = await client.post(f"{BASE}/predictions/{running}/cancel", headers=USER)
        assert again.status_code == 200 and again.json()["status"] == "succeeded"


def test_logs_are_the_workloads_log() -> None:
    asyncio.run(_test_logs_are_the_workloads_log())


async def _test_logs_are_the_workloads_log() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "talker", Talker)
        pid = (
            await client.post(
                f"{BASE}/predictions",
                json={"version": "talker", "input": {"who": "ann"}},
                headers=USER,
            )
        ).json()["id"]
        done = await finished(client, pid)
        assert done["output"] == "ANN"

        async def logged() -> str | None:
            body = (await client.get(f"{BASE}/predictions/{pid}", headers=USER)).json()
            return body["logs"] if "hello from ann" in (body["logs"] or "") else None

        assert "hello from ann" in await until(logged)


def test_list_is_paginated_newest_first_across_apis() -> None:
    asyncio.run(_test_list_is_paginated_newest_first_across_apis())


async def _test_list_is_paginated_newest_first_across_apis() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "other", Doubler)
        await deploy(client, "native", Doubler, compat=[])
        ids = []
        for n in range(3):
            for api in ("double", "other"):
                answer = await client.post(
                    f"{BASE}/models/o/{api}/predictions", json={"input": {"n": n}}, headers=USER
                )
                ids.append(answer.json()["id"])
        await client.post("/native", json={"n": 1}, headers=USER)
        page = await client.get(f"{BASE}/predictions", headers=USER)
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"next", "previous", "results"} and body["next"] is None
        assert [p["id"] for p in body["results"]] == ids[::-1]
        assert all(set(p) == FIELDS for p in body["results"])
        bad = await client.get(f"{BASE}/predictions", params={"cursor": "nope"}, headers=USER)
        assert bad.status_code == 422 and "cursor" in bad.json()["detail"]


def test_list_pages_with_next() -> None:
    asyncio.run(_test_list_pages_with_next())


async def _test_list_pages_with_next() -> None:
    from asyncnb.gateway.compat import replicate

    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)
        ids = []
        for n in range(5):
            answer = await client.post(
                f"{BASE}/models/o/double/predictions", json={"input": {"n": n}}, headers=USER
            )
            ids.append(answer.json()["id"])
        original, replicate.PAGE_SIZE = replicate.PAGE_SIZE, 2
        try:
            seen: list[str] = []
            url: str | None = f"{BASE}/predictions"
            while url:
                body = (await client.get(url, headers=USER)).json()
                seen += [p["id"] for p in body["results"]]
                url = body["next"]
        finally:
            replicate.PAGE_SIZE = original
        assert seen == ids[::-1]


def test_bad_input_gets_clear_4xx() -> None:
    asyncio.run(_test_bad_input_gets_clear_4xx())


async def _test_bad_input_gets_clear_4xx() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)

        async def create(body: Any, path: str = "/predictions", **headers: str) -> httpx.Response:
            return await client.post(f"{BASE}{path}", json=body, headers={**USER, **headers})

        cases: list[tuple[httpx.Response, int, str]] = [
            (await create({"version": "double"}), 422, "input is required"),
            (await create({"version": "double", "input": [1]}), 422, "input must be an object"),
            (await create({"input": {}}), 422, "version is required"),
            (await create({"version": "Bad Name!", "input": {}}), 422, "invalid version"),
            (await create({"version": "double:x", "input": {}}), 422, "invalid version"),
            (await create({"version": "double:7", "input": {}}), 422, "not deployed"),
            (await create({"version": "missing", "input": {}}), 404, "missing"),
            (await create({"input": {}}, "/models/o/missing/predictions"), 404, "missing"),
            (await create({"input": {}}, "/models/%20/double/predictions"), 404, "owner"),
            (await create([1]), 422, "JSON object"),
            (
                await create({"version": "double", "input": {}, "webhook": "ftp://x/hook"}),
                422,
                "webhook",
            ),
            (await create({"version": "double", "input": {}, "webhook": 5}), 422, "webhook"),
            (
                await create(
                    {
                        "version": "double",
                        "input": {},
                        "webhook": "https://example.com/hook",
                        "webhook_events_filter": ["finished"],
                    }
                ),
                422,
                "webhook_events_filter",
            ),
            (
                await create(
                    {
                        "version": "double",
                        "input": {},
                        "webhook": "https://example.com/hook",
                        "webhook_events_filter": "completed",
                    }
                ),
                422,
                "webhook_events_filter",
            ),
            (
                await create(
                    {"version": "double", "input": {}, "webhook_events_filter": ["start"]}
                ),
                422,
                "needs a webhook",
            ),
        ]
        for answer, status, words in cases:
            assert answer.status_code == status, (answer.text, words)
            assert words in answer.json()["detail"], (answer.text, words)
        not_json = await client.post(
            f"{BASE}/predictions",
            content=b"{",
            headers={**USER, "content-type": "application/json"},
        )
        assert not_json.status_code == 400 and "JSON" in not_json.json()["detail"]
        for pid in ("nope", "double-xyz", "double" + "0" * 32, "BAD-" + "0" * 32, "-" + "0" * 32):
            answer = await client.get(f"{BASE}/predictions/{pid}", headers=USER)
            assert answer.status_code == 400 and "prediction id" in answer.json()["detail"], pid
        unknown = await client.get(f"{BASE}/predictions/double-{'0' * 32}", headers=USER)
        assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
        no_api = await client.get(f"{BASE}/predictions/missing-{'0' * 32}", headers=USER)
        assert no_api.status_code == 404
        cancel_unknown = await client.post(
            f"{BASE}/predictions/double-{'0' * 32}/cancel", headers=USER
        )
        assert cancel_unknown.status_code == 404


def test_webhook_maps_to_the_native_webhook_and_events() -> None:
    asyncio.run(_test_webhook_maps_to_the_native_webhook_and_events())


async def _test_webhook_maps_to_the_native_webhook_and_events() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)
        answer = await client.post(
            f"{BASE}/predictions",
            json={
                "version": "double",
                "input": {"n": 1},
                "webhook": "https://example.com/hook",
                "webhook_events_filter": ["logs", "completed"],
            },
            headers=USER,
        )
        assert answer.status_code == 201, answer.text
        api, _, workload_id = answer.json()["id"].rpartition("-")
        engine = client._transport.app.state.engine
        workload = await engine.get(api, workload_id)
        assert workload.webhook_url == "https://example.com/hook"
        assert workload.webhook_events == ("log", "completed", "failed", "cancelled")
        default = await client.post(
            f"{BASE}/predictions",
            json={"version": "double", "input": {}, "webhook": "https://example.com/hook"},
            headers=USER,
        )
        workload = await engine.get("double", default.json()["id"].rpartition("-")[2])
        assert workload.webhook_events == ("output", "completed", "failed", "cancelled")
        legacy = await client.post(
            f"{BASE}/predictions",
            json={"version": "double", "input": {}, "webhook_completed": "https://example.com/h"},
            headers=USER,
        )
        workload = await engine.get("double", legacy.json()["id"].rpartition("-")[2])
        assert workload.webhook_events == ("completed", "failed", "cancelled")


def test_webhook_secret_is_the_apis_and_admin_only() -> None:
    asyncio.run(_test_webhook_secret_is_the_apis_and_admin_only())


async def _test_webhook_secret_is_the_apis_and_admin_only() -> None:
    async with replicate_gateway() as client:
        none_yet = await client.get(f"{BASE}/webhooks/default/secret", headers=ADMIN)
        assert none_yet.status_code == 404 and "detail" in none_yet.json()
        secret = await deploy_with_secret(client, "double")
        answer = await client.get(f"{BASE}/webhooks/default/secret", headers=ADMIN)
        assert answer.status_code == 200 and answer.json() == {"key": secret}
        user = await client.get(f"{BASE}/webhooks/default/secret", headers=USER)
        assert user.status_code == 403
        other = await deploy_with_secret(client, "other")
        assert other != secret
        ambiguous = await client.get(f"{BASE}/webhooks/default/secret", headers=ADMIN)
        assert ambiguous.status_code == 409 and "?model=" in ambiguous.json()["detail"]
        chosen = await client.get(
            f"{BASE}/webhooks/default/secret", params={"model": "acme/other"}, headers=ADMIN
        )
        assert chosen.json() == {"key": other}


async def deploy_with_secret(client: httpx.AsyncClient, name: str) -> str:
    import base64

    import cloudpickle

    body = {"predictor": base64.b64encode(cloudpickle.dumps(Doubler)).decode(), "options": {}}
    answer = await client.put(f"/apis/{name}", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["webhook_secret"]
    return secret


def test_auth_tokens_keys_and_scopes() -> None:
    asyncio.run(_test_auth_tokens_keys_and_scopes())


async def _test_auth_tokens_keys_and_scopes() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "other", Doubler)
        body = {"version": "double", "input": {"n": 1}}
        assert (await client.post(f"{BASE}/predictions", json=body)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (
            await client.post(f"{BASE}/predictions", json=body, headers=wrong)
        ).status_code == 403
        legacy = {"Authorization": "Token usr"}
        assert (
            await client.post(f"{BASE}/predictions", json=body, headers=legacy)
        ).status_code == 201
        invoker = await make_key(client, ["double"], ["invoke"])
        reader = await make_key(client, ["double"], ["read"])
        mine = await client.post(f"{BASE}/predictions", json=body, headers=invoker)
        assert mine.status_code == 201, mine.text
        pid = mine.json()["id"]
        assert (await finished(client, pid))["output"] == {"double": 2}
        own = await client.get(f"{BASE}/predictions/{pid}", headers=invoker)
        assert own.status_code == 200 and own.json()["output"] == {"double": 2}
        by_owner = (await client.post(f"{BASE}/predictions", json=body, headers=USER)).json()["id"]
        foreign = await client.get(f"{BASE}/predictions/{by_owner}", headers=invoker)
        assert foreign.status_code == 403
        seen = await client.get(f"{BASE}/predictions/{by_owner}", headers=reader)
        assert seen.status_code == 200 and seen.json()["output"] is None
        assert seen.json()["logs"] is None
        assert (
            await client.post(f"{BASE}/predictions/{by_owner}/cancel", headers=reader)
        ).status_code == 403
        elsewhere = {"version": "other", "input": {"n": 1}}
        assert (
            await client.post(f"{BASE}/predictions", json=elsewhere, headers=invoker)
        ).status_code == 403
        assert (
            await client.post(f"{BASE}/predictions", json=body, headers=reader)
        ).status_code == 403
        listed = (await client.get(f"{BASE}/predictions", headers=invoker)).json()["results"]
        assert [p["id"] for p in listed] == [pid]
        read_all = (await client.get(f"{BASE}/predictions", headers=reader)).json()["results"]
        assert {p["id"] for p in read_all} >= {pid, by_owner}
        assert all(p["id"].startswith("double-") for p in read_all)
        bogus = {"Authorization": "Bearer ank_" + "0" * 16 + "_" + "x" * 43}
        refused = await client.get(f"{BASE}/predictions", headers=bogus)
        assert refused.status_code == 401 and "invalid API key" in refused.json()["detail"]
        refused = await client.post(f"{BASE}/predictions", json=body, headers=bogus)
        assert refused.status_code == 401
        assert (await client.get(f"{BASE}/predictions")).status_code == 401
        assert (
            await client.get(f"{BASE}/webhooks/default/secret", headers=invoker)
        ).status_code == 403


async def make_key(client: httpx.AsyncClient, apis: list[str], scopes: list[str]) -> dict[str, str]:
    answer = await client.post(
        "/keys",
        json={"name": f"k-{'-'.join(scopes)}", "apis": apis, "scopes": scopes},
        headers=ADMIN,
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['key']}"}


def test_an_api_can_leave_the_contract_out() -> None:
    asyncio.run(_test_an_api_can_leave_the_contract_out())


async def _test_an_api_can_leave_the_contract_out() -> None:
    async with replicate_gateway() as client:
        await deploy(client, "native", Doubler, compat=["cortex"])
        answer = await client.post(
            f"{BASE}/predictions", json={"version": "native", "input": {}}, headers=USER
        )
        assert answer.status_code == 404 and "replicate" in answer.json()["detail"]
