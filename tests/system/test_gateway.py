"""The HTTP contract, against `asyncnb serve` running as a real process with real workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> httpx.Client:
    with gateway.client() as c:
        yield c


@pytest.fixture(scope="module")
def echo(client: Client, gateway: Gateway) -> str:
    client.deploy(predictors.Echo, "echo", config={"tag": "v1"})
    gateway.wait_ready("echo")
    return "echo"


def poll(http: httpx.Client, api: str, workload_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = http.get(f"/{api}/{workload_id}").json()
        if info["status"] in ("completed", "failed", "cancelled"):
            return info
        time.sleep(0.05)
    raise TimeoutError(info)


def test_submit_json_then_poll_result(http: httpx.Client, echo: str) -> None:
    response = http.post(f"/{echo}", json={"text": "hello"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "in_queue" and len(body["id"]) == 32
    assert response.headers["location"] == f"/echo/{body['id']}"
    info = poll(http, echo, body["id"])
    assert info["status"] == "completed"
    assert info["result"]["payload"] == {"text": "hello"}
    assert info["result"]["id"] == body["id"]  # predict(self, payload, request_id)
    assert info["attempts"] == 1 and info["version"] == 1
    for key in ("created_at", "started_at", "finished_at"):
        assert info[key].endswith("Z")
    raw = http.get(f"/{echo}/{body['id']}/result")
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.json() == info["result"]


def test_prefer_wait_returns_the_finished_workload(http: httpx.Client, echo: str) -> None:
    response = http.post(f"/{echo}", json=[1, 2], headers={"Prefer": "wait=20"})
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["result"]["payload"] == [1, 2]
    assert response.headers["preference-applied"] == "wait=20"


def test_payload_types_and_raw_results(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    client.deploy(predictors.Raw, "raw")
    gateway.wait_ready("raw")
    text = http.post(
        "/raw",
        content="héllo",
        headers={"Content-Type": "text/plain; charset=utf-8", "Prefer": "wait=20"},
    ).json()
    assert text["result"] == "HÉLLO" and text["result_content_type"].startswith("text/plain")
    binary = http.post(
        "/raw",
        content=b"\x00\x01\xff",
        headers={"Content-Type": "application/octet-stream", "Prefer": "wait=20"},
    )
    info = binary.json()
    assert "result" not in info and info["result_content_type"] == "application/octet-stream"
    raw = http.get(f"/raw/{info['id']}/result")
    assert raw.content == b"\xff\x01\x00"
    assert raw.headers["content-type"] == "application/octet-stream"
    # a number and a list are results too, not only dicts
    assert http.post("/raw", json=7, headers={"Prefer": "wait=20"}).json()["result"] == 7


def test_large_payload_and_result_go_through_storage(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    client.deploy(predictors.Raw, "raw")
    gateway.wait_ready("raw")
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB, over the 1 MiB inline limit
    info = http.post("/raw", content=big, headers={"Prefer": "wait=30"}).json()
    assert info["status"] == "completed", info
    assert http.get(f"/raw/{info['id']}/result").content == big[::-1]
    large = http.post("/raw", json={"repeat": 2_500_000}, headers={"Prefer": "wait=30"}).json()
    assert large["result_size"] == 2_500_000
    streamed = http.get(f"/raw/{large['id']}/result")
    assert streamed.content == b"x" * 2_500_000


def test_small_and_mid_size_results_both_come_back(http: httpx.Client, echo: str) -> None:
    """Small chunk outcomes return on the scheduler's event stream, larger ones as the task's
    result (runtime.run_chunk); a burst mixing both sizes gets every result right."""
    payloads = [{"n": n, "pad": "x" * (20_000 if n % 3 == 0 else 10)} for n in range(60)]
    ids = [http.post(f"/{echo}", json=p).json()["id"] for p in payloads]
    for payload, workload_id in zip(payloads, ids, strict=True):
        info = poll(http, echo, workload_id)
        assert info["status"] == "completed" and info["result"]["payload"] == payload


def test_no_config_predictor(client: Client, gateway: Gateway) -> None:
    api = client.deploy(predictors.NoConfig, "noconfig")
    gateway.wait_ready("noconfig")
    assert api.submit({"a": [1]}).result(timeout=30) == {"a": [1]}


def test_failure_carries_type_message_and_traceback(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    client.deploy(predictors.Failing, "failing")
    gateway.wait_ready("failing")
    info = http.post("/failing", json={"x": 1}, headers={"Prefer": "wait=20"}).json()
    assert info["status"] == "failed"
    assert info["error"]["type"] == "ValueError"
    assert "bad payload" in info["error"]["message"]
    assert "in predict" in info["error"]["traceback"]
    assert "runtime.py" not in info["error"]["traceback"]
    assert http.get(f"/failing/{info['id']}/result").status_code == 409
    assert http.get("/failing").json()["failed"] >= 1


def test_retries_with_backoff_count_attempts(
    client: Client, gateway: Gateway, tmp_path: Path, http: httpx.Client
) -> None:
    client.deploy(
        predictors.Flaky,
        "flaky",
        config={"folder": str(tmp_path), "fail_times": 2},
        max_retries=2,
        retry_backoff_s=0.05,
    )
    gateway.wait_ready("flaky")
    ok = http.post("/flaky", json={"n": 1}).json()
    info = poll(http, "flaky", ok["id"])
    assert info["status"] == "completed" and info["attempts"] == 3
    assert info["result"] == {"calls": 3}
    client.deploy(
        predictors.Flaky,
        "flaky",
        config={"folder": str(tmp_path), "fail_times": 5},
        max_retries=1,
        retry_backoff_s=0.05,
    )
    gateway.wait_ready("flaky")
    bad = http.post("/flaky", json={"n": 2}).json()
    info = poll(http, "flaky", bad["id"])
    assert info["status"] == "failed" and info["attempts"] == 2
    assert info["error"]["type"] == "RuntimeError"


def test_timeout_fails_with_type_timeout(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    client.deploy(predictors.Hangs, "hangs", timeout_s=0.5)
    gateway.wait_ready("hangs")
    info = http.post("/hangs", json={}, headers={"Prefer": "wait=20"}).json()
    assert info["status"] == "failed"
    assert info["error"]["type"] == "Timeout"


def test_unserializable_result_fails_clearly(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    client.deploy(predictors.Unserializable, "unser")
    gateway.wait_ready("unser")
    info = http.post("/unser", json={}, headers={"Prefer": "wait=20"}).json()
    assert info["status"] == "failed"
    assert info["error"]["type"] == "TypeError"
    assert "JSON-serializable" in info["error"]["message"]


def test_init_error_shows_in_api_state(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    client.deploy(predictors.InitFails, "initfails")
    deadline = time.monotonic() + 30
    while (state := http.get("/initfails").json())["state"] == "deploying":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["state"] == "error"
    assert "model weights not found" in state["error"]["message"]
    assert "Traceback" in state["error"]["traceback"]
    refused = http.post("/initfails", json={})
    assert refused.status_code == 503 and "redeployed" in refused.json()["detail"]


def test_progress_is_reported(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Slow, "slow", config={"seconds": 2.0})
    gateway.wait_ready("slow")
    workload_id = http.post("/slow", json={}).json()["id"]
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = http.get(f"/slow/{workload_id}").json()
        if info.get("progress"):
            seen.append(info["progress"]["fraction"])
        if info["status"] == "completed":
            break
        time.sleep(0.1)
    assert seen and 0 < min(seen) < 1, seen
    assert any(
        "step"
        in (http.get(f"/slow/{workload_id}").json().get("progress") or {}).get("message", "step")
        for _ in [0]
    )


def test_cancel_queued_and_running(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Sleepy, "sleepy", max_concurrency=1)
    gateway.wait_ready("sleepy")
    running = [http.post("/sleepy", json={"sleep": 1.5}).json()["id"] for _ in range(2)]
    queued = http.post("/sleepy", json={"sleep": 0, "name": "never"}).json()["id"]
    cancelled = http.delete(f"/sleepy/{queued}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = http.delete(f"/sleepy/{queued}")
    assert again.status_code == 409
    time.sleep(0.3)
    best_effort = http.delete(f"/sleepy/{running[0]}")
    assert best_effort.json()["status"] == "cancelled"
    finished = poll(http, "sleepy", running[1])
    assert finished["status"] == "completed"
    time.sleep(1.5)
    assert http.get(f"/sleepy/{queued}").json()["status"] == "cancelled"
    assert http.get(f"/sleepy/{running[0]}").json()["status"] == "cancelled"
    assert http.delete(f"/sleepy/{running[1]}").status_code == 409


def test_priority_runs_higher_first(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Sleepy, "prio", max_concurrency=1)
    gateway.wait_ready("prio")
    # occupy both workers (one much longer), then queue low before high: the slot that
    # frees first must take high, and low can only follow it
    blockers = [http.post("/prio", json={"sleep": s}).json()["id"] for s in (1.0, 4.0)]
    time.sleep(0.3)
    low = http.post("/prio", json={"name": "low"}, headers={"X-Priority": "-5"}).json()["id"]
    high = http.post("/prio", json={"name": "high"}, headers={"X-Priority": "10"}).json()["id"]
    for workload_id in blockers:
        poll(http, "prio", workload_id)
    low_info, high_info = poll(http, "prio", low), poll(http, "prio", high)
    assert high_info["started_at"] <= low_info["started_at"]
    assert high_info["priority"] == 10 and low_info["priority"] == -5


def test_idempotency_key_gives_one_workload(http: httpx.Client, echo: str) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = http.post(f"/{echo}", json={"n": 1}, headers=headers)
    second = http.post(f"/{echo}", json={"n": 2}, headers=headers)
    assert first.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    info = poll(http, echo, first.json()["id"])
    assert info["result"]["payload"] == {"n": 1}
    third = http.post(f"/{echo}", json={"n": 3}, headers=headers)
    assert third.status_code == 200 and third.json()["result"]["payload"] == {"n": 1}


def test_bad_input_gets_clear_4xx(http: httpx.Client, echo: str) -> None:
    cases = [
        (
            http.post(
                f"/{echo}", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            400,
            "malformed JSON",
        ),
        (
            http.post(f"/{echo}", content=b"", headers={"Content-Type": "application/json"}),
            400,
            "empty body",
        ),
        (
            http.post(f"/{echo}", content=b"\xff\xfe", headers={"Content-Type": "text/plain"}),
            400,
            "not valid utf-8",
        ),
        (http.post("/nosuchapi", json={}), 404, "not deployed"),
        (http.get(f"/{echo}/" + "0" * 32), 404, "not found"),
        (http.get(f"/{echo}/not-an-id"), 400, "invalid workload id"),
        (http.get(f"/{echo}/" + "a" * 300), 400, "invalid workload id"),
        (http.get(f"/{echo}/%2e%2e"), 400, "invalid workload id"),
        (http.post(f"/{echo}", json={}, headers={"X-Priority": "high"}), 422, "integer"),
        (http.post(f"/{echo}", json={}, headers={"X-Priority": "99999999"}), 422, "within"),
        (http.post(f"/{echo}", json={}, headers={"X-Webhook-URL": "ftp://x"}), 422, "http"),
        (
            http.post(f"/{echo}", json={}, headers={"X-Webhook-URL": "http://169.254.169.254/"}),
            422,
            "link-local",
        ),
        (http.put("/apis/Bad_Name", json={"predictor": "eA=="}), 400, "invalid API name"),
        (
            http.put("/apis/my-reserved", json={"predictor": "eA==", "options": {"gpu": -1}}),
            422,
            "gpu",
        ),
        (http.post("/Bad_Name", json={}), 404, "invalid API name"),
        (http.put("/apis/metrics", json={"predictor": "eA=="}), 400, "reserved"),
        (
            http.put("/apis/okname", json={"predictor": "eA==", "options": {"max_concurrency": 0}}),
            422,
            "max_concurrency",
        ),
        (
            http.put("/apis/okname", json={"predictor": "eA==", "options": {"bogus": 1}}),
            422,
            "bogus",
        ),
        (http.put("/apis/okname", json={"predictor": "!!"}), 422, "base64"),
        (http.put("/apis/okname", content=b"nope"), 422, ""),
        (http.delete(f"/{echo}/" + "0" * 32), 404, "not found"),
    ]
    for response, code, text in cases:
        assert response.status_code == code, (response.request.url, response.text)
        detail = json.dumps(response.json()["detail"]).lower()
        assert text.lower() in detail, (response.request.url, detail)
    # nothing accepted before was lost, and the API still works
    assert http.post(f"/{echo}", json={}, headers={"Prefer": "wait=20"}).json()["status"] == (
        "completed"
    )


def test_payload_over_limit_gets_413(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Raw, "tiny", max_payload_bytes=1000)
    gateway.wait_ready("tiny")
    response = http.post("/tiny", content=b"x" * 5000)
    assert response.status_code == 413 and "max_payload_bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is checked while streaming
        for _ in range(10):
            yield b"y" * 500

    streamed = http.post("/tiny", content=chunks())
    assert streamed.status_code == 413
    assert http.get("/tiny").json()["submitted"] == 0


def test_api_status_list_metrics_docs(http: httpx.Client, echo: str) -> None:
    http.post(f"/{echo}", json={}, headers={"Prefer": "wait=20"})
    status = http.get(f"/{echo}").json()
    for key in (
        "version",
        "state",
        "queue_depth",
        "in_progress",
        "completed",
        "failed",
        "workers",
        "desired_workers",
        "options",
        "endpoint",
    ):
        assert key in status
    assert status["workers"] == 2 and status["options"]["max_concurrency"] == 1
    assert status["options"]["webhook_secret"] == "***"
    assert "whsec_" not in http.get(f"/{echo}").text + http.get("/apis").text
    names = [a["name"] for a in http.get("/apis").json()["apis"]]
    assert echo in names
    metrics = http.get("/metrics").text
    for name in (
        "asyncnb_queue_depth",
        "asyncnb_in_progress",
        "asyncnb_workloads_completed",
        "asyncnb_queue_wait_seconds_bucket",
        "asyncnb_end_to_end_seconds_bucket",
        "asyncnb_workers",
        "asyncnb_desired_workers",
    ):
        assert name in metrics
    assert 'asyncnb_workers{api="echo"} 2.0' in metrics
    assert http.get("/openapi.json").json()["info"]["title"] == "asyncnb gateway"
    assert http.get("/healthz").json()["status"] == "ok"
    listing = http.get(f"/{echo}/workloads", params={"status": "completed", "limit": 3}).json()
    assert 0 < len(listing["workloads"]) <= 3


def test_redeploy_is_a_new_version(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Echo, "versions", config={"tag": "first"})
    gateway.wait_ready("versions")
    assert (
        http.post("/versions", json={}, headers={"Prefer": "wait=20"}).json()["result"]["tag"]
        == "first"
    )
    client.deploy(predictors.Echo, "versions", config={"tag": "second"})
    info = gateway.wait_ready("versions")
    assert info["version"] == 2
    done = http.post("/versions", json={}, headers={"Prefer": "wait=20"}).json()
    assert done["result"]["tag"] == "second" and done["version"] == 2


def test_init_runs_once_per_worker_process(
    client: Client, gateway: Gateway, http: httpx.Client, tmp_path: Path
) -> None:
    client.deploy(predictors.CountInits, "inits", config={"folder": str(tmp_path)})
    gateway.wait_ready("inits")
    ids = [http.post("/inits", json={}).json()["id"] for _ in range(40)]
    pids = {poll(http, "inits", i)["result"] for i in ids}
    inits = list(tmp_path.glob("init-*"))
    assert len(inits) == len(pids) <= 2


def test_batched_predictor(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Batched, "batched", max_batch_size=8)
    gateway.wait_ready("batched")
    ids = [http.post("/batched", json={"x": i}).json()["id"] for i in range(30)]
    results = [poll(http, "batched", i)["result"] for i in ids]
    assert [r["x"] for r in results] == [2 * i for i in range(30)]
    assert all(1 <= r["batch"] <= 8 for r in results)


def test_undeploy_cancels_queue(client: Client, gateway: Gateway, http: httpx.Client) -> None:
    client.deploy(predictors.Sleepy, "gone", max_concurrency=1)
    gateway.wait_ready("gone")
    ids = [http.post("/gone", json={"sleep": 0.5}).json()["id"] for _ in range(6)]
    assert http.delete("/apis/gone").json()["deleted"] is True
    assert http.get("/gone").status_code == 404
    statuses = {http.get(f"/gone/{i}").json()["status"] for i in ids}
    assert "cancelled" in statuses and statuses <= {"cancelled", "completed"}


def test_status_fast_path_matches_the_documented_route(http: httpx.Client, echo: str) -> None:
    done = http.post(f"/{echo}", json={"same": True}, headers={"Prefer": "wait=20"}).json()
    fast = http.get(f"/{echo}/{done['id']}")
    # Prefer: wait=0 skips the fast path, so the FastAPI route answers the same request
    routed = http.get(f"/{echo}/{done['id']}", headers={"Prefer": "wait=0"})
    assert fast.status_code == routed.status_code == 200
    assert fast.json() == routed.json() == done
    assert fast.headers["content-type"] == "application/json"
    assert http.get(f"/other/{done['id']}").status_code == 404  # not readable via another API


def test_concurrent_replays_of_one_key_make_one_workload(
    client: Client, gateway: Gateway, http: httpx.Client
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client.deploy(predictors.Raw, "idem")
    gateway.wait_ready("idem")
    body = b"z" * (2 * 1024 * 1024)  # streamed to storage: replays must not share the file

    def send(_: int) -> httpx.Response:
        with gateway.client() as own:
            return own.post("/idem", content=body, headers={"Idempotency-Key": "same"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    assert {r.status_code for r in responses} <= {200, 202}
    assert len({r.json()["id"] for r in responses}) == 1
    info = poll(http, "idem", responses[0].json()["id"])
    assert info["status"] == "completed"
    assert http.get(f"/idem/{info['id']}/result").content == body[::-1]
    assert http.get("/idem").json()["submitted"] == 1


def test_deploy_body_size_is_limited(gateway: Gateway) -> None:
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(gateway.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /apis/huge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 1000000000000\r\n\r\n{"
        )
        received = b""
        # headers and body may come in separate packets; the gateway closes after a 413
        while b"deploy body is larger" not in received and (chunk := sock.recv(4096)):
            received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413") and "deploy body is larger" in answer
