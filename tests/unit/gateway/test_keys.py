"""API keys over HTTP, in this process (the gateway app over a real engine, fake backend):
`/keys`, what a key may and may not reach, 401 against 403, attribution and quotas."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from tests.unit.gateway.test_app import (
    ADMIN,
    GATE,
    USER,
    Doubler,
    Gated,
    assert_error,
    deploy,
    finished,
    gateway,
)


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (as the rest of tests/unit does)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", "bob")
    fields.setdefault("apis", ["double"])
    answer = await client.post("/keys", json=fields, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


@sync
async def test_create_list_revoke() -> None:
    async with gateway() as client:
        created = await new_key(client, scopes=["invoke", "read"], max_queued=5, rate_limit=10)
        assert created["key"].startswith(f"ank_{created['id']}_")
        assert created["prefix"] == f"ank_{created['id']}_"
        assert created["name"] == "bob" and created["apis"] == ["double"]
        assert created["scopes"] == ["invoke", "read"]
        assert (created["max_queued"], created["rate_limit"], created["burst"]) == (5, 10, 10)
        assert created["state"] == "active" and created["last_used_at"] is None
        listed = (await client.get("/keys", headers=ADMIN)).json()["keys"]
        assert [k["id"] for k in listed] == [created["id"]]
        # the key's text appears only in the answer that created it
        assert created["key"] not in json.dumps(listed)
        assert "key" not in listed[0] and "hash" not in listed[0] and "salt" not in listed[0]
        revoked = await client.delete(f"/keys/{created['id']}", headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
        listed = (await client.get("/keys", headers=ADMIN)).json()["keys"]
        assert listed[0]["state"] == "revoked" and listed[0]["revoked_at"]


@sync
async def test_keys_routes_need_the_admin_token() -> None:
    async with gateway() as client:
        created = await new_key(client)
        for method, path in [
            ("GET", "/keys"),
            ("POST", "/keys"),
            ("DELETE", f"/keys/{created['id']}"),
        ]:
            body = {"name": "x", "apis": ["*"]} if method == "POST" else None
            assert_error(await client.request(method, path, json=body), 401)
            assert_error(await client.request(method, path, json=body, headers=USER), 403)
            as_key = await client.request(method, path, json=body, headers=bearer(created["key"]))
            assert "workload routes" in assert_error(as_key, 403)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"apis": ["double"]}, "name"),
        ({"name": "bob"}, "apis"),
        ({"name": "bob", "apis": []}, "apis"),
        ({"name": "owner", "apis": ["double"]}, "reserved"),
        ({"name": "bad name", "apis": ["double"]}, "invalid key name"),
        ({"name": "bob", "apis": ["Not_An_API"]}, "invalid API name"),
        ({"name": "bob", "apis": ["metrics"]}, "reserved"),
        ({"name": "bob", "apis": ["double"], "scopes": ["admin"]}, "scopes"),
        ({"name": "bob", "apis": ["double"], "scopes": []}, "scopes"),
        ({"name": "bob", "apis": ["double"], "expires_in_s": 0}, "expires_in_s"),
        ({"name": "bob", "apis": ["double"], "rate_limit": -1}, "rate_limit"),
        ({"name": "bob", "apis": ["double"], "burst": 5}, "burst needs a rate_limit"),
        ({"name": "bob", "apis": ["double"], "max_queued": 0}, "max_queued"),
        ({"name": "bob", "apis": ["double"], "secret": "mine"}, "secret"),
    ],
)
@sync
async def test_bad_key_requests_are_422(body: dict[str, Any], fragment: str) -> None:
    async with gateway() as client:
        answer = await client.post("/keys", json=body, headers=ADMIN)
        assert fragment in json.dumps(assert_error(answer, 422))


@sync
async def test_revoking_an_unknown_key_is_404() -> None:
    async with gateway() as client:
        assert "no API key" in assert_error(
            await client.delete("/keys/0123456789abcdef", headers=ADMIN), 404
        )
        assert "16 hex digits" in assert_error(
            await client.delete("/keys/nope", headers=ADMIN), 404
        )


@sync
async def test_an_invoke_key_runs_its_own_workloads() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        key = bearer((await new_key(client))["key"])
        answer = await client.post("/double", json={"n": 4}, headers=key)
        assert answer.status_code == 202, answer.text
        workload_id = answer.json()["id"]
        record = await finished(client, "double", workload_id)
        assert record["submitted_by"] == "bob"
        mine = await client.get(f"/double/{workload_id}", headers=key)
        assert mine.status_code == 200 and mine.json()["result"] == {"double": 8}
        result = await client.get(f"/double/{workload_id}/result", headers=key)
        assert result.json() == {"double": 8}
        # invoke alone does not read the API or its workloads
        assert "'read' scope" in assert_error(await client.get("/double", headers=key), 403)
        assert_error(await client.get("/double/workloads", headers=key), 403)
        # the owner's workloads are attributed to 'owner'
        owner = (await client.post("/double", json={"n": 1}, headers=USER)).json()["id"]
        assert (await finished(client, "double", owner))["submitted_by"] == "owner"


@sync
async def test_a_key_reaches_nothing_but_its_apis() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "other", Doubler)
        key = bearer((await new_key(client, scopes=["invoke", "read"]))["key"])
        detail = assert_error(await client.post("/other", json={"n": 1}, headers=key), 403)
        assert "may not call API 'other'" in detail
        assert_error(await client.get("/other", headers=key), 403)
        assert_error(await client.get("/other/workloads", headers=key), 403)
        for path in ["/apis", "/metrics", "/openapi.json", "/docs", "/keys"]:
            assert "workload routes" in assert_error(await client.get(path, headers=key), 403), path
        assert_error(await client.put("/apis/double", json={}, headers=key), 403)
        assert_error(await client.delete("/apis/double", headers=key), 403)
        assert (await client.get("/healthz", headers=key)).status_code == 200


@sync
async def test_a_star_key_calls_every_api() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        await deploy(client, "other", Doubler)
        key = bearer((await new_key(client, apis=["*"]))["key"])
        for api in ("double", "other"):
            assert (await client.post(f"/{api}", json={"n": 1}, headers=key)).status_code == 202


@sync
async def test_a_read_key_submits_nothing() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        key = bearer((await new_key(client, scopes=["read"]))["key"])
        detail = assert_error(await client.post("/double", json={"n": 1}, headers=key), 403)
        assert "'invoke' scope" in detail
        assert (await client.get("/double", headers=key)).status_code == 200
        assert (await client.get("/double/workloads", headers=key)).status_code == 200


@sync
async def test_another_callers_workload() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        bob = bearer((await new_key(client, name="bob"))["key"])
        carol = bearer((await new_key(client, name="carol", scopes=["invoke", "read"]))["key"])
        dave = bearer((await new_key(client, name="dave"))["key"])
        bobs = (await client.post("/double", json={"n": 3}, headers=bob)).json()["id"]
        await finished(client, "double", bobs)
        owners = (await client.post("/double", json={"n": 5}, headers=USER)).json()["id"]
        await finished(client, "double", owners)
        for workload_id in (bobs, owners):
            # invoke on someone else's workload: neither its result nor a cancel
            for headers in (carol, dave):
                detail = assert_error(
                    await client.get(f"/double/{workload_id}/result", headers=headers), 403
                )
                assert "another caller" in detail
                assert_error(await client.delete(f"/double/{workload_id}", headers=headers), 403)
                assert_error(
                    await client.get(f"/double/{workload_id}/notebook", headers=headers), 403
                )
            # an invoke-only key does not see it; a read key sees its status, not its data
            assert_error(await client.get(f"/double/{workload_id}", headers=dave), 403)
            seen = await client.get(f"/double/{workload_id}", headers=carol)
            assert seen.status_code == 200 and seen.json()["status"] == "completed"
            assert "result" not in seen.json()
        listing = (await client.get("/double/workloads", headers=carol)).json()["workloads"]
        assert {w["id"] for w in listing} == {bobs, owners}
        assert all("result" not in w for w in listing)
        # the owner sees everything, and filters by submitter
        owner_view = (await client.get(f"/double/{bobs}", headers=USER)).json()
        assert owner_view["result"] == {"double": 6}
        by_bob = await client.get("/double/workloads?submitted_by=bob", headers=USER)
        assert [w["id"] for w in by_bob.json()["workloads"]] == [bobs]
        by_owner = await client.get("/double/workloads?submitted_by=owner", headers=USER)
        assert [w["id"] for w in by_owner.json()["workloads"]] == [owners]


@sync
async def test_idempotency_keys_are_per_caller() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        bob = bearer((await new_key(client, name="bob"))["key"])
        carol = bearer((await new_key(client, name="carol"))["key"])
        same = {"Idempotency-Key": "order-1"}
        first = await client.post("/double", json={"n": 1}, headers={**bob, **same})
        again = await client.post("/double", json={"n": 1}, headers={**bob, **same})
        other = await client.post("/double", json={"n": 2}, headers={**carol, **same})
        assert first.json()["id"] == again.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert other.json()["id"] != first.json()["id"]
        assert "idempotent-replayed" not in other.headers


@sync
async def test_revoked_and_expired_keys_get_401() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        created = await new_key(client)
        key = bearer(created["key"])
        assert (await client.post("/double", json={"n": 1}, headers=key)).status_code == 202
        await client.delete(f"/keys/{created['id']}", headers=ADMIN)
        answer = await client.post("/double", json={"n": 1}, headers=key)
        assert "was revoked" in assert_error(answer, 401)
        assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        expiring = await new_key(client, expires_in_s=0.2)
        await asyncio.sleep(0.3)
        answer = await client.get("/double", headers=bearer(expiring["key"]))
        assert "expired" in assert_error(answer, 401)
        listed = {
            k["id"]: k["state"] for k in (await client.get("/keys", headers=ADMIN)).json()["keys"]
        }
        assert listed == {created["id"]: "revoked", expiring["id"]: "expired"}


@sync
async def test_a_wrong_secret_is_401_and_names_nothing() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        created = await new_key(client)
        forged = created["key"][:-4] + ("AAAA" if not created["key"].endswith("AAAA") else "BBBB")
        answer = await client.post("/double", json={"n": 1}, headers=bearer(forged))
        assert assert_error(answer, 401) == "invalid API key"
        unknown = "ank_0123456789abcdef_" + "A" * 43
        assert (
            assert_error(await client.get("/double", headers=bearer(unknown)), 401)
            == "invalid API key"
        )


@sync
async def test_keys_are_checked_on_an_open_gateway_too() -> None:
    async with gateway(token=None, admin_token=None) as client:
        await deploy(client, "double", Doubler)
        created = await new_key(client)
        key = bearer(created["key"])
        workload_id = (await client.post("/double", json={"n": 2}, headers=key)).json()["id"]
        assert (await finished(client, "double", workload_id))["submitted_by"] == "bob"
        await client.delete(f"/keys/{created['id']}", headers=ADMIN)
        assert_error(await client.post("/double", json={"n": 2}, headers=key), 401)
        # without a key, an open gateway stays open
        assert (await client.post("/double", json={"n": 2})).status_code == 202


@sync
async def test_rate_limit_is_429_with_retry_after() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        key = bearer((await new_key(client, rate_limit=0.5, burst=2))["key"])
        codes = [(await client.post("/double", json={"n": 1}, headers=key)) for _ in range(3)]
        assert [a.status_code for a in codes[:2]] == [202, 202]
        detail = assert_error(codes[2], 429)
        assert "rate limit of 0.5 requests/s (burst 2)" in detail
        assert int(codes[2].headers["retry-after"]) >= 1
        # the owner is not limited by a key's limit
        assert (await client.post("/double", json={"n": 1}, headers=USER)).status_code == 202


@sync
async def test_max_queued_is_429_naming_the_limit_and_nothing_is_dropped() -> None:
    GATE.clear()
    async with gateway() as client:
        await deploy(client, "gated", Gated)
        key = bearer((await new_key(client, apis=["gated"], max_queued=2))["key"])
        accepted = [
            (await client.post("/gated", json={"n": i}, headers=key)).json()["id"] for i in range(2)
        ]
        refused = await client.post("/gated", json={"n": 9}, headers=key)
        assert "max_queued" in assert_error(refused, 429) and "2 unfinished" in refused.text
        # another caller is not held back by bob's limit
        assert (await client.post("/gated", json={"n": 0}, headers=USER)).status_code == 202
        GATE.set()
        for workload_id in accepted:
            assert (await finished(client, "gated", workload_id))["status"] == "completed"
        # places free up as workloads finish
        again = await client.post("/gated", json={"n": 3}, headers=key)
        assert again.status_code == 202, again.text


@sync
async def test_concurrent_submits_never_pass_max_queued() -> None:
    GATE.clear()
    async with gateway() as client:
        await deploy(client, "gated", Gated)
        key = bearer((await new_key(client, apis=["gated"], max_queued=3))["key"])
        answers = await asyncio.gather(
            *(client.post("/gated", json={"n": i}, headers=key) for i in range(10))
        )
        assert sorted(a.status_code for a in answers) == [202] * 3 + [429] * 7
        GATE.set()


@sync
async def test_attribution_in_the_api_record_and_metrics() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        key = bearer((await new_key(client))["key"])
        ids = [
            (await client.post("/double", json={"n": i}, headers=key)).json()["id"]
            for i in range(3)
        ]
        ids.append((await client.post("/double", json={"n": 0}, headers=USER)).json()["id"])
        for workload_id in ids:
            await finished(client, "double", workload_id)
        submitters = (await client.get("/double", headers=USER)).json()["submitters"]
        assert submitters[0] == {
            "submitted_by": "bob",
            "submitted": 3,
            "completed": 3,
            "failed": 0,
            "cancelled": 0,
            "unfinished": 0,
        }
        assert submitters[1]["submitted_by"] == "owner"
        metrics = (await client.get("/metrics", headers=USER)).text
        assert (
            "asyncnb_submitter_workloads_total"
            '{api="double",outcome="completed",submitted_by="bob"} 3.0' in metrics
        )


@sync
async def test_last_used_is_listed() -> None:
    async with gateway() as client:
        await deploy(client, "double", Doubler)
        created = await new_key(client)
        await client.post("/double", json={"n": 1}, headers=bearer(created["key"]))
        listed = (await client.get("/keys", headers=ADMIN)).json()["keys"][0]
        assert listed["last_used_at"] is not None
        filtered = await client.get("/keys?api=other", headers=ADMIN)
        assert filtered.json()["keys"] == []
