"""The gateway's ASGI app in this process, over a real engine whose chunks run for real on a
thread (the fake backend with the worker runtime): the HTTP API as a client sees it, both on
the fast path (submit, poll) and on the FastAPI routes."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import cloudpickle
import httpx

from asyncnb.contract.settings import GatewaySettings
from asyncnb.engine import Engine, EngineSettings
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.gateway import create_asgi_app
from asyncnb.runtime.chunks import run_chunk, warm
from asyncnb.storage import Storage

USER = {"Authorization": "Bearer usr"}
ADMIN = {"Authorization": "Bearer adm"}
DEADLINE_S = 10.0


class Doubler:
    def predict(self, payload: Any) -> Any:
        return {"double": payload["n"] * 2}


class Failing:
    def predict(self, payload: Any) -> Any:
        raise ZeroDivisionError("no luck")


class Texter:
    def predict(self, payload: Any) -> Any:
        return f"got {payload!r}"


GATE = threading.Event()


class Gated:
    """Runs until the test opens the gate (or a few seconds pass, so no thread is left)."""

    def predict(self, payload: Any) -> Any:
        GATE.wait(5)
        return payload


class BadInit:
    def __init__(self, config: dict[str, Any]) -> None:
        raise RuntimeError("no weights at " + config["path"])

    def predict(self, payload: Any) -> Any:
        return payload


@asynccontextmanager
async def gateway_and_engine(
    storage: Storage | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
    """An HTTP client of a gateway with a real engine, and that engine (no tokens unless
    `settings` gives them)."""
    storage = storage or Storage(f"memory://app-{uuid.uuid4().hex}")
    backend = FakeBackend(workers=1, runner=run_chunk, warmer=warm)
    engine = Engine(storage, backend, EngineSettings())
    await engine.start()
    app = create_asgi_app(GatewaySettings(storage=storage.url, **settings))
    app.state.engine = engine  # what the lifespan does (StatusFastPath.state is the app's)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, engine
    finally:
        GATE.set()
        await engine.close()
        await backend.close()


@asynccontextmanager
async def gateway(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a gateway with a real engine (user token 'usr', admin token 'adm')."""
    settings.setdefault("token", "usr")
    settings.setdefault("admin_token", "adm")
    async with gateway_and_engine(**settings) as (client, _):
        yield client


async def until(probe: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {DEADLINE_S} s")
        await asyncio.sleep(0.01)


async def deploy(
    client: httpx.AsyncClient,
    name: str,
    cls: type,
    config: dict[str, Any] | None = None,
    ready: str = "ready",
    **options: Any,
) -> dict[str, Any]:
    """Deploy the way `Client.deploy` does, then wait for the API to leave `deploying`."""
    body = {
        "predictor": base64.b64encode(cloudpickle.dumps(cls)).decode(),
        "config": config,
        "options": options,
    }
    answer = await client.put(f"/apis/{name}", json=body, headers=ADMIN)
    assert answer.status_code in (200, 201), answer.text

    async def settled() -> dict[str, Any] | None:
        info: dict[str, Any] = (await client.get(f"/{name}", headers=USER)).json()
        return info if info["state"] != "deploying" else None

    info = await until(settled)
    assert info["state"] == ready, info
    return info


async def finished(client: httpx.AsyncClient, name: str, workload_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        answer = await client.get(f"/{name}/{workload_id}", headers=USER)
        assert answer.status_code == 200, answer.text
        record: dict[str, Any] = answer.json()
        return record if record["status"] in ("completed", "failed", "cancelled") else None

    result: dict[str, Any] = await until(probe)
    return result


def assert_error(answer: httpx.Response, status: int) -> Any:
    """Every error is `{"detail": ...}` JSON."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert list(body) == ["detail"]
    return body["detail"]


# the workload lifecycle -----------------------------------------------------------------------


def test_deploy_submit_poll_result() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            info = await deploy(client, "double", Doubler)
            assert (info["name"], info["version"]) == ("double", 1)
            assert info["endpoint"] == "http://gw/double"
            answer = await client.post("/double", json={"n": 21}, headers=USER)
            assert answer.status_code == 202
            accepted = answer.json()
            assert set(accepted) == {"id", "status"}
            assert accepted["status"] == "in_queue"
            assert answer.headers["location"] == f"/double/{accepted['id']}"
            record = await finished(client, "double", accepted["id"])
            assert record["status"] == "completed"
            assert record["result"] == {"double": 42}
            assert record["result_url"] == f"/double/{accepted['id']}/result"
            result = await client.get(record["result_url"], headers=USER)
            assert result.status_code == 200
            assert result.headers["content-type"].startswith("application/json")
            assert result.json() == {"double": 42}

    asyncio.run(scenario())


def test_prefer_wait_answers_the_finished_record() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "double", Doubler)
            answer = await client.post(
                "/double", json={"n": 2}, headers={**USER, "Prefer": "wait=5"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["preference-applied"] == "wait=5"
            record = answer.json()
            assert (record["status"], record["result"]) == ("completed", {"double": 4})
            # the fast path's poll and the route's (Prefer: wait goes to it) show one record
            fast = await client.get(f"/double/{record['id']}", headers=USER)
            routed = await client.get(
                f"/double/{record['id']}", headers={**USER, "Prefer": "wait=1"}
            )
            assert fast.json() == routed.json() == record

    asyncio.run(scenario())


def test_text_payload_and_result() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "text", Texter)
            answer = await client.post(
                "/text",
                content=b"hello",
                headers={**USER, "Content-Type": "text/plain", "Prefer": "wait=5"},
            )
            record = answer.json()
            assert record["result"] == "got 'hello'"
            result = await client.get(f"/text/{record['id']}/result", headers=USER)
            assert result.headers["content-type"].startswith("text/plain")
            assert result.text == "got 'hello'"

    asyncio.run(scenario())


def test_failing_predictor() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "fails", Failing)
            answer = await client.post("/fails", json={}, headers=USER)
            record = await finished(client, "fails", answer.json()["id"])
            assert record["status"] == "failed"
            assert record["error"]["type"] == "ZeroDivisionError"
            assert record["error"]["message"] == "no luck"
            assert "result" not in record
            result = await client.get(f"/fails/{record['id']}/result", headers=USER)
            assert "not completed" in assert_error(result, 409)

    asyncio.run(scenario())


def test_predictor_that_cannot_start() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            info = await deploy(client, "broken", BadInit, {"path": "/nowhere"}, ready="error")
            assert "no weights at /nowhere" in info["error"]["message"]
            answer = await client.post("/broken", json={}, headers=USER)
            assert "failed to start" in assert_error(answer, 503)
            assert answer.headers["retry-after"] == "5"

    asyncio.run(scenario())


def test_cancel() -> None:
    async def scenario() -> None:
        GATE.clear()
        async with gateway() as client:
            await deploy(client, "gated", Gated)
            running = (await client.post("/gated", json=1, headers=USER)).json()["id"]
            queued = (await client.post("/gated", json=2, headers=USER)).json()["id"]
            cancelled = await client.delete(f"/gated/{queued}", headers=USER)
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "cancelled"
            assert (await client.get(f"/gated/{queued}", headers=USER)).json()[
                "status"
            ] == "cancelled"
            GATE.set()
            assert (await finished(client, "gated", running))["status"] == "completed"
            again = await client.delete(f"/gated/{running}", headers=USER)
            assert "already completed" in assert_error(again, 409)
            again = await client.delete(f"/gated/{queued}", headers=USER)
            assert "already cancelled" in assert_error(again, 409)

    asyncio.run(scenario())


def test_idempotency_key_replays_the_same_workload() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "double", Doubler)
            headers = {**USER, "Idempotency-Key": "order-17"}
            first = await client.post("/double", json={"n": 1}, headers=headers)
            assert first.status_code == 202
            assert "idempotent-replayed" not in first.headers
            workload_id = first.json()["id"]
            await finished(client, "double", workload_id)
            replay = await client.post("/double", json={"n": 999}, headers=headers)
            assert replay.status_code == 200  # finished: the whole record
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.json()["id"] == workload_id
            assert replay.json()["result"] == {"double": 2}
            other = await client.post(
                "/double", json={"n": 1}, headers={**USER, "Idempotency-Key": "order-18"}
            )
            assert other.json()["id"] != workload_id

    asyncio.run(scenario())


def test_listings() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "double", Doubler)
            answer = await client.post(
                "/double", json={"n": 1}, headers={**USER, "Prefer": "wait=5"}
            )
            apis = (await client.get("/apis", headers=USER)).json()["apis"]
            assert [(a["name"], a["completed"]) for a in apis] == [("double", 1)]
            listed = (await client.get("/double/workloads", headers=USER)).json()
            assert [w["id"] for w in listed["workloads"]] == [answer.json()["id"]]
            redeployed = await client.put(
                "/apis/double",
                json={"predictor": base64.b64encode(cloudpickle.dumps(Doubler)).decode()},
                headers=ADMIN,
            )
            assert (redeployed.status_code, redeployed.json()["version"]) == (200, 2)

    asyncio.run(scenario())


# refusals -------------------------------------------------------------------------------------


def test_unknown_and_malformed_ids() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "double", Doubler)
            unknown = uuid.uuid4().hex
            assert "not found" in assert_error(
                await client.get(f"/double/{unknown}", headers=USER), 404
            )
            assert_error(await client.get(f"/double/{unknown}/result", headers=USER), 404)
            assert_error(await client.delete(f"/double/{unknown}", headers=USER), 404)
            bad = await client.get("/double/not-an-id", headers=USER)
            assert "expected 32 hex digits" in assert_error(bad, 400)
            assert_error(await client.delete("/double/XYZ", headers=USER), 400)
            assert_error(await client.get(f"/nosuch/{unknown}", headers=USER), 404)
            assert_error(await client.post("/nosuch", json={}, headers=USER), 404)
            assert_error(await client.get("/nosuch", headers=USER), 404)

    asyncio.run(scenario())


def test_unknown_routes_answer_json() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            assert_error(await client.get("/a/b/c/d", headers=USER), 404)
            assert_error(await client.get("/Not_A_Name", headers=USER), 404)
            assert_error(await client.patch("/apis", headers=USER), 405)

    asyncio.run(scenario())


def test_bad_payloads_are_refused_before_queueing() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "double", Doubler)
            json_type = {**USER, "Content-Type": "application/json"}
            empty = await client.post("/double", content=b"", headers=json_type)
            assert "empty body" in assert_error(empty, 400)
            malformed = await client.post("/double", content=b"{", headers=json_type)
            assert "malformed JSON" in assert_error(malformed, 400)
            priority = await client.post(
                "/double", json={"n": 1}, headers={**USER, "X-Priority": "high"}
            )
            assert "x-priority must be an integer" in assert_error(priority, 422)
            info = (await client.get("/double", headers=USER)).json()
            assert (info["submitted"], info["queue_depth"]) == (0, 0)

    asyncio.run(scenario())


def test_bad_deploys() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            predictor = base64.b64encode(cloudpickle.dumps(Doubler)).decode()
            bad_name = await client.put(
                "/apis/Bad_Name", json={"predictor": predictor}, headers=ADMIN
            )
            assert "invalid API name" in assert_error(bad_name, 400)
            reserved = await client.put(
                "/apis/healthz", json={"predictor": predictor}, headers=ADMIN
            )
            assert "reserved" in assert_error(reserved, 400)
            options = await client.put(
                "/apis/x", json={"predictor": predictor, "options": {"gpu": -1}}, headers=ADMIN
            )
            detail = assert_error(options, 422)
            assert detail[0]["loc"] == ["body", "options", "gpu"]
            not_base64 = await client.put("/apis/x", json={"predictor": "%%%"}, headers=ADMIN)
            assert "base64" in assert_error(not_base64, 422)
            assert_error(await client.put("/apis/x", json={}, headers=ADMIN), 422)
            assert (await client.get("/apis", headers=ADMIN)).json() == {"apis": []}

    asyncio.run(scenario())


def test_tokens_on_the_fast_path_and_the_routes() -> None:
    async def scenario() -> None:
        async with gateway() as client:
            await deploy(client, "double", Doubler)
            workload_id = (await client.post("/double", json={"n": 1}, headers=USER)).json()["id"]
            requests = [
                ("POST", "/double"),  # fast path
                ("GET", f"/double/{workload_id}"),  # fast path
                ("GET", "/apis"),
                ("GET", "/double"),
                ("GET", f"/double/{workload_id}/result"),
                ("DELETE", f"/double/{workload_id}"),
            ]
            for method, path in requests:
                kwargs: dict[str, Any] = {"json": {"n": 1}} if method == "POST" else {}
                missing = await client.request(method, path, **kwargs)
                assert "missing token" in assert_error(missing, 401), path
                assert missing.headers["www-authenticate"] == "Bearer"
                wrong = await client.request(
                    method, path, headers={"Authorization": "Bearer nope"}, **kwargs
                )
                assert assert_error(wrong, 403) == "invalid token", path
                malformed = await client.request(
                    method, path, headers={"Authorization": "Basic x"}, **kwargs
                )
                assert_error(malformed, 401)
            # the admin token is a user token too; the user token deploys nothing
            assert (await client.get(f"/double/{workload_id}", headers=ADMIN)).status_code == 200
            assert (await client.post("/double", json={"n": 1}, headers=ADMIN)).status_code == 202
            undeploy = await client.delete("/apis/double", headers=USER)
            assert "needs the admin token" in assert_error(undeploy, 403)
            assert (await client.get("/healthz")).json()["status"] == "ok"

    asyncio.run(scenario())


def test_open_gateway_takes_no_token() -> None:
    async def scenario() -> None:
        async with gateway(token=None, admin_token=None) as client:
            info = await deploy(client, "double", Doubler)
            assert info["state"] == "ready"
            answer = await client.post("/double", json={"n": 5}, headers={"Prefer": "wait=5"})
            assert answer.json()["result"] == {"double": 10}
            assert (await client.delete("/apis/double")).json() == {
                "name": "double",
                "deleted": True,
            }
            assert_error(await client.get("/double"), 404)

    asyncio.run(scenario())
