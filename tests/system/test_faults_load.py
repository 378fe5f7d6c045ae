"""Faults under load, with real processes and at least 1,000 workloads in flight.

The promise under test: a workload that got a 202 is never lost, and is never reported completed
twice with two different results. Every scenario below submits its workloads while a *gate* (a
file) is closed, so that all of them are provably in flight when the fault hits; the test then
opens the gate and every accepted workload must complete, with its own payload.

Each result carries the pid of the worker process that produced it: a workload reported
completed twice would show two different results.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from asyncnb.client import Client

from ..support.processes import Gateway, MotoServer, WebhookReceiver, free_port, stop_group
from .test_faults import WorkerSupervisor, _dask, scheduler_gateway

N = 1000  # workloads in flight when each fault hits
FINAL = ("completed", "failed", "cancelled")


# predictors (shipped to the workers by value) ----------------------------------------------------
class Gated:
    """Returns its payload and pid, but only once the file `{folder}/open` exists.

    Each worker process appends the `n` of every payload it starts to `{folder}/running-{pid}`,
    so a test knows which process to kill and what it was running. The wait is bounded, so a
    broken test never leaves a worker stuck.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.folder = config["folder"]

    def predict(self, payload: Any) -> Any:
        with open(os.path.join(self.folder, f"running-{os.getpid()}"), "a") as started:
            started.write(f"{payload['n']}\n")
        gate = os.path.join(self.folder, "open")
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"n": payload["n"], "pid": os.getpid()}


class Misbehaves:
    """Behaves as each payload asks: hang, return something unserialisable, raise, or answer."""

    def predict(self, payload: Any) -> Any:
        mode = payload.get("mode")
        if mode == "hang":
            time.sleep(3600)
        if mode == "unserialisable":
            return {"value": object()}
        if mode == "raise":
            raise ValueError(f"refusing {payload['n']}")
        return {"n": payload["n"]}


class InitFails:
    def __init__(self, config: dict[str, Any]) -> None:
        raise RuntimeError("model weights not found")

    def predict(self, payload: Any) -> Any:
        return payload


# helpers ---------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _request_all(
    url: str,
    requests: list[tuple[str, str, Any, dict[str, str]]],
    concurrency: int,
    token: str | None = None,
) -> list[Answer]:
    """Send (method, path, json, headers) requests, at most `concurrency` at a time (aiohttp:
    httpx's async pool costs milliseconds per request under this kind of load)."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=timeout, headers=_auth(token)
    ) as http:

        async def one(method: str, path: str, body: Any, headers: dict[str, str]) -> Answer:
            async with gate, http.request(method, path, json=body, headers=headers) as answer:
                return Answer(answer.status, dict(answer.headers), await answer.json())

        return await asyncio.gather(*(one(*request) for request in requests))


def submit_many(
    url: str,
    api: str,
    payloads: list[Any],
    headers: dict[str, str] | None = None,
    concurrency: int = 64,
    token: str | None = None,
) -> list[str]:
    """Submit concurrently; every one must be accepted. Returns the ids, in payload order."""
    requests = [("POST", f"/{api}", payload, headers or {}) for payload in payloads]
    answers = asyncio.run(_request_all(url, requests, concurrency, token))
    codes = Counter(a.status for a in answers)
    assert codes == {202: len(payloads)}, (codes, [a.body for a in answers][:3])
    return [a.body["id"] for a in answers]


def wait_finished(
    url: str, api: str, ids: list[str], timeout: float = 90, token: str | None = None
) -> dict[str, dict[str, Any]]:
    """The final records of `ids`; fails naming how many never finished within `timeout`."""
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while True:
        pending = [i for i in ids if i not in done]
        if not pending:
            return done
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(pending)} of {len(ids)} accepted workloads never finished; "
                f"one of them: {last.get(pending[0])}"
            )
        requests = [("GET", f"/{api}/{i}", None, {}) for i in pending]
        for workload_id, answer in zip(
            pending, asyncio.run(_request_all(url, requests, 32, token)), strict=True
        ):
            last[workload_id] = answer.body
            if answer.status == 200 and answer.body["status"] in FINAL:
                done[workload_id] = answer.body
        time.sleep(0.25)


def in_flight(url: str, api: str) -> int:
    info = httpx.get(f"{url}/{api}", timeout=30).json()
    return int(info["queue_depth"]) + int(info["in_progress"])


def assert_all_completed_once(
    finished: dict[str, dict[str, Any]], payload_of: dict[str, int]
) -> None:
    """Every workload completed with its own payload: nothing lost, nothing mixed up."""
    statuses = Counter(info["status"] for info in finished.values())
    assert statuses == {"completed": len(payload_of)}, statuses
    for workload_id, n in payload_of.items():
        assert finished[workload_id]["result"]["n"] == n, finished[workload_id]


def assert_unchanged(url: str, api: str, finished: dict[str, dict[str, Any]]) -> None:
    """Read every finished record again: a workload is never completed twice, differently."""
    again = wait_finished(url, api, list(finished), timeout=30)
    changed = [i for i, info in finished.items() if again[i] != info]
    assert not changed, (finished[changed[0]], again[changed[0]])


def wait_for_file(folder: Path, pattern: str, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    raise TimeoutError(f"no {pattern} in {folder} after {timeout} s")


def deploy_gated(url: str, name: str, folder: Path) -> None:
    with Client(url) as client:
        client.deploy(Gated, name, config={"folder": str(folder)}, max_concurrency=2)


def _two_workers_fast_webhook_retries(storage: Path) -> Gateway:
    return Gateway(
        "--storage",
        str(storage),
        "--workers",
        "2",
        "--webhook-attempts",
        "10",
        "--webhook-backoff",
        "0.2",
    ).start()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the faults that leave it running: two workers, fast webhook retries."""
    gateway = _two_workers_fast_webhook_retries(tmp_path_factory.mktemp("storage"))
    yield gateway
    gateway.stop()


# kill -9 of a Dask worker ------------------------------------------------------------------------
def test_kill9_worker_with_1000_in_flight(loaded: Gateway, tmp_path: Path) -> None:
    deploy_gated(loaded.url, "gated-worker", tmp_path)
    loaded.wait_ready("gated-worker")
    ids = submit_many(loaded.url, "gated-worker", [{"n": n} for n in range(N)])
    assert in_flight(loaded.url, "gated-worker") == N

    marker = wait_for_file(tmp_path, "running-*")
    victim = int(marker.name.removeprefix("running-"))
    os.kill(victim, signal.SIGKILL)  # a worker that is running chunks of ours right now
    was_running = {int(n) for n in marker.read_text().split()}
    assert was_running
    time.sleep(0.5)
    (tmp_path / "open").touch()

    finished = wait_finished(loaded.url, "gated-worker", ids)
    assert_all_completed_once(finished, {i: n for n, i in enumerate(ids)})
    # What the dead worker had started ran again on another process; nothing it computed was
    # reported. (`attempts` is not asserted: a re-run whose result reaches the gateway before
    # its start event is not counted, see the report of this suite.)
    assert victim not in {info["result"]["pid"] for info in finished.values()}
    rerun = [info for info in finished.values() if info["result"]["n"] in was_running]
    assert len(rerun) == len(was_running)
    time.sleep(1.0)  # any stray outcome of the dead worker's chunks has arrived by now
    assert_unchanged(loaded.url, "gated-worker", finished)
    status = httpx.get(f"{loaded.url}/gated-worker").json()
    assert (status["queue_depth"], status["in_progress"], status["completed"]) == (0, 0, N)


# the webhook receiver is down for a while --------------------------------------------------------
class DownReceiver:
    """A `WebhookReceiver` whose port refuses connections until `up()`."""

    def __init__(self) -> None:
        self.receiver = WebhookReceiver()
        self.url = self.receiver.url
        self.port = self.receiver.server.server_address[1]
        self.receiver.server.server_close()  # down: connections to the port are refused
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        handler = self.receiver.server.RequestHandlerClass
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def check_deliveries(url: str, api: str, secret: str, ids: list[str], down: DownReceiver) -> None:
    """Every workload's event arrived, signed; its record says delivered after retries."""
    down.receiver.wait_for(len(ids), timeout=60)
    assert {r["json"]["id"] for r in down.receiver.received} == set(ids)
    for delivery in down.receiver.received:
        event = Webhook(secret).verify(delivery["body"], delivery["headers"])
        assert event["status"] == "completed"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        outcomes = [r["webhook"] for r in wait_finished(url, api, ids).values()]
        if all(o["status"] == "delivered" for o in outcomes):
            break
        time.sleep(0.5)
    assert Counter(o["status"] for o in outcomes) == {"delivered": len(ids)}
    assert min(o["attempts"] for o in outcomes) >= 2  # every first attempt met a closed port


def test_webhooks_to_a_receiver_that_was_down_arrive_once_it_is_back(
    loaded: Gateway, tmp_path: Path
) -> None:
    (tmp_path / "open").touch()
    with Client(loaded.url) as client:
        api = client.deploy(Gated, "hooked", config={"folder": str(tmp_path)})
    loaded.wait_ready("hooked")
    down = DownReceiver()
    try:
        ids = submit_many(
            loaded.url, "hooked", [{"n": n} for n in range(200)], {"X-Webhook-URL": down.url}
        )
        finished = wait_finished(loaded.url, "hooked", ids)
        assert_all_completed_once(finished, {i: n for n, i in enumerate(ids)})
        time.sleep(0.3)  # a few retries hit the closed port
        assert not down.receiver.received
        down.up()
        assert api.webhook_secret
        check_deliveries(loaded.url, "hooked", api.webhook_secret, ids, down)
    finally:
        down.close()


def test_1000_webhook_retries_do_not_stall_the_gateway(tmp_path: Path) -> None:
    (tmp_path / "open").touch()
    gateway = _two_workers_fast_webhook_retries(tmp_path / "storage")
    down = DownReceiver()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(Gated, "hooked-load", config={"folder": str(tmp_path)})
        gateway.wait_ready("hooked-load")
        ids = submit_many(
            gateway.url, "hooked-load", [{"n": n} for n in range(N)], {"X-Webhook-URL": down.url}
        )
        slowest = 0.0
        for _ in range(10):  # while the deliveries retry, the gateway must keep answering
            started = time.monotonic()
            try:
                httpx.get(f"{gateway.url}/healthz", timeout=3).raise_for_status()
            except httpx.TimeoutException:
                pass
            slowest = max(slowest, time.monotonic() - started)
            assert slowest < 0.75, f"GET /healthz took {slowest:.2f} s while webhooks retried"
            time.sleep(0.3)
        finished = wait_finished(gateway.url, "hooked-load", ids, timeout=20)
        assert_all_completed_once(finished, {i: n for n, i in enumerate(ids)})
        down.up()
        assert api.webhook_secret
        check_deliveries(gateway.url, "hooked-load", api.webhook_secret, ids, down)
    finally:
        down.close()
        gateway.kill9()  # no graceful stop: it would wait for the deliveries still owed


# predictors that misbehave ----------------------------------------------------------------------
def test_init_error_leaves_other_apis_unaffected(loaded: Gateway, tmp_path: Path) -> None:
    (tmp_path / "open").touch()
    with Client(loaded.url) as client:
        client.deploy(Gated, "steady", config={"folder": str(tmp_path)}, max_concurrency=2)
        loaded.wait_ready("steady")
        ids = submit_many(loaded.url, "steady", [{"n": n} for n in range(300)])
        client.deploy(InitFails, "broken")
    with loaded.client() as http:
        deadline = time.monotonic() + 30
        while (state := http.get("/broken").json())["state"] == "deploying":
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["state"] == "error"
        assert state["error"]["type"] == "PredictorInitError"
        assert state["error"]["message"] == "model weights not found"
        traceback = state["error"]["traceback"]
        assert traceback.startswith("Traceback (most recent call last):")
        assert "in __init__" in traceback
        assert traceback.endswith("RuntimeError: model weights not found\n")
        refused = http.post("/broken", json={})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["detail"] == (
            "API 'broken' failed to start and takes no work until redeployed: "
            "model weights not found"
        )
        finished = wait_finished(loaded.url, "steady", ids)
        assert_all_completed_once(finished, {i: n for n, i in enumerate(ids)})
        more = submit_many(loaded.url, "steady", [{"n": n} for n in range(300, 310)])
        assert len(wait_finished(loaded.url, "steady", more)) == 10
        states = {a["name"]: a["state"] for a in http.get("/apis").json()["apis"]}
        assert states["steady"] == "ready" and states["broken"] == "error"


@pytest.mark.parametrize(
    ("mode", "error_type", "message"),
    [
        ("hang", "Timeout", "predict did not finish within timeout_s=0.5"),
        (
            "unserialisable",
            "TypeError",
            "predict returned a dict, which is neither JSON-serializable nor bytes/str: "
            "Object of type object is not JSON serializable",
        ),
        ("raise", "ValueError", "refusing {n}"),
    ],
    ids=["hang", "unserialisable", "raise"],
)
def test_misbehaving_predict_fails_clearly_and_frees_its_slot(
    loaded: Gateway, mode: str, error_type: str, message: str
) -> None:
    with Client(loaded.url) as client:
        client.deploy(Misbehaves, f"misbehaves-{mode}", timeout_s=0.5, max_concurrency=1)
    api = f"misbehaves-{mode}"
    loaded.wait_ready(api)
    # Bad ones first, on every slot (2 workers x 1); good ones only run once a slot is freed.
    bad = submit_many(loaded.url, api, [{"mode": mode, "n": n} for n in range(4)], concurrency=1)
    good = submit_many(loaded.url, api, [{"n": n} for n in range(4, 204)])
    finished = wait_finished(loaded.url, api, bad + good, timeout=60)
    for n, workload_id in enumerate(bad):
        info = finished[workload_id]
        assert info["status"] == "failed", info
        assert info["error"]["type"] == error_type
        assert info["error"]["message"] == message.format(n=n)
        assert info["attempts"] == 1
    assert_all_completed_once(
        {i: finished[i] for i in good}, {i: n for n, i in enumerate(good, start=4)}
    )


# kill -9 of the gateway, then a restart on the same storage ----------------------------------
def test_kill9_gateway_with_1000_in_flight_then_restart(tmp_path: Path) -> None:
    storage, gate = tmp_path / "storage", tmp_path / "gate"
    gate.mkdir()
    args = ("--storage", str(storage), "--workers", "2")
    gateway = Gateway(*args).start()
    try:
        deploy_gated(gateway.url, "gated-crash", gate)
        gateway.wait_ready("gated-crash")
        (gate / "open").touch()
        early = submit_many(gateway.url, "gated-crash", [{"n": n} for n in range(200)])
        before = wait_finished(gateway.url, "gated-crash", early)
        (gate / "open").unlink()
        late = submit_many(gateway.url, "gated-crash", [{"n": n} for n in range(200, 200 + N)])
        assert in_flight(gateway.url, "gated-crash") == N
    finally:
        gateway.kill9()

    restarted = Gateway(*args).start()
    try:
        (gate / "open").touch()
        ids = early + late
        finished = wait_finished(restarted.url, "gated-crash", ids)
        assert_all_completed_once(finished, {i: n for n, i in enumerate(ids)})
        for workload_id, info in before.items():  # never completed twice, differently
            assert finished[workload_id]["result"] == info["result"]
        status = httpx.get(f"{restarted.url}/gated-crash").json()
        assert (status["queue_depth"], status["in_progress"]) == (0, 0)
        assert status["submitted"] == status["completed"] == N  # the recovered ones, all done
    finally:
        restarted.stop()


# the Dask scheduler restarts ------------------------------------------------------------------
def test_scheduler_restart_with_1000_in_flight(tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler_args = ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    scheduler = _dask(scheduler_args, tmp_path / "scheduler.log")
    worker_args = ["worker", address, "--nthreads", "2", "--host", "127.0.0.1", "--no-dashboard"]
    workers = [
        WorkerSupervisor([*worker_args, "--death-timeout", "60"], tmp_path / f"worker{i}.log")
        for i in range(2)
    ]
    gate = tmp_path / "gate"
    gate.mkdir()
    log = tmp_path / "gateway.log"
    gateway = scheduler_gateway(address, tmp_path)
    try:
        gateway.start()
        deploy_gated(gateway.url, "gated-sched", gate)
        gateway.wait_ready("gated-sched")
        ids = submit_many(gateway.url, "gated-sched", [{"n": n} for n in range(N)])
        wait_for_file(gate, "running-*")
        assert in_flight(gateway.url, "gated-sched") == N

        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait(10)
        time.sleep(1.0)
        scheduler = _dask(scheduler_args, tmp_path / "scheduler.log")
        (gate / "open").touch()

        finished = wait_finished(gateway.url, "gated-sched", ids, timeout=20)
        assert_all_completed_once(finished, {i: n for n, i in enumerate(ids)})
        with gateway.client() as http:
            # Its workers re-register with the new scheduler: on a loaded machine the API can
            # still say waiting_for_resources for a moment after the last workload finished.
            deadline = time.monotonic() + 30
            while http.get("/gated-sched").json()["state"] != "ready":
                assert time.monotonic() < deadline, http.get("/gated-sched").json()
                time.sleep(0.2)
            after = http.post("/gated-sched", json={"n": -1}, headers={"Prefer": "wait=30"})
            assert after.status_code == 200 and after.json()["result"]["n"] == -1
        text = log.read_text()
        assert "the Dask scheduler was replaced" in text or "reconnected to the Dask" in text
    finally:
        gateway.stop()
        for worker in workers:
            worker.stop()
        stop_group(scheduler)


# the S3 endpoint stalls (moto_server paused with SIGSTOP), then comes back --------------------
SHORT_S3_TIMEOUTS = (
    '{"config_kwargs": {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}}}'
)
OUTAGE_SUBMITS = 8
STORAGE_TIMEOUT_S = 4.0
OUTAGE_CLIENT_TIMEOUT_S = 20.0


@dataclass
class Outage:
    """What one S3 outage under load looked like, for the tests that judge it."""

    url: str
    accepted: list[str]  # 202s before the outage
    in_flight_at_outage: int
    during: list[tuple[float, int | str, dict[str, str]]] = field(default_factory=list)
    during_accepted: list[str] = field(default_factory=list)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    status_after: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


async def _submit_during_outage(url: str) -> list[tuple[float, int | str, dict[str, str], Any]]:
    async def one(n: int) -> tuple[float, int | str, dict[str, str], Any]:
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=OUTAGE_CLIENT_TIMEOUT_S) as http:
            try:
                answer = await http.post("/gated-s3", json={"n": 10_000 + n})
            except httpx.TimeoutException:
                return time.monotonic() - started, "client timeout", {}, None
        body = answer.json()
        return time.monotonic() - started, answer.status_code, dict(answer.headers), body

    return await asyncio.gather(*(one(n) for n in range(OUTAGE_SUBMITS)))


@pytest.fixture(scope="module")
def s3_outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    folder = tmp_path_factory.mktemp("gate")
    moto = MotoServer().start()
    moto.make_bucket("outage")
    gateway = Gateway(
        "--storage",
        "s3://outage/run",
        "--storage-options",
        SHORT_S3_TIMEOUTS,
        "--storage-timeout",
        str(STORAGE_TIMEOUT_S),
        "--workers",
        "2",
        env=moto.env,
        log=folder / "gateway.log",
    )
    assert moto.proc is not None
    try:
        gateway.start()
        deploy_gated(gateway.url, "gated-s3", folder)
        gateway.wait_ready("gated-s3")
        accepted = submit_many(gateway.url, "gated-s3", [{"n": n} for n in range(N)])
        outage = Outage(gateway.url, accepted, in_flight(gateway.url, "gated-s3"))

        os.kill(moto.proc.pid, signal.SIGSTOP)
        try:
            (folder / "open").touch()  # results now arrive while storage cannot take them
            for elapsed, code, headers, body in asyncio.run(_submit_during_outage(gateway.url)):
                outage.during.append((elapsed, code, headers))
                if code == 202:
                    outage.during_accepted.append(body["id"])
        finally:
            os.kill(moto.proc.pid, signal.SIGCONT)

        outage.finished = wait_finished(
            gateway.url, "gated-s3", outage.accepted + outage.during_accepted, timeout=120
        )
        deadline = time.monotonic() + 60
        with gateway.client() as http:
            while time.monotonic() < deadline:
                outage.status_after = http.get("/gated-s3").json()
                if outage.status_after["queue_depth"] + outage.status_after["in_progress"] == 0:
                    break
                time.sleep(0.5)
            outage.after = http.post(
                "/gated-s3", json={"n": -1}, headers={"Prefer": "wait=30"}
            ).json()
        yield outage
    finally:
        gateway.stop()
        if moto.proc.poll() is None:
            os.kill(moto.proc.pid, signal.SIGCONT)
        moto.stop()


def test_s3_outage_loses_no_accepted_workload(s3_outage: Outage) -> None:
    assert s3_outage.in_flight_at_outage == N
    for elapsed, code, headers in s3_outage.during:
        # 503 + Retry-After, or no answer at all: a 202 is fine only if it completes (below).
        assert code in (503, 202, "client timeout"), (elapsed, code)
        if code == 503:
            assert headers["retry-after"] == "5"
    ids = s3_outage.accepted + s3_outage.during_accepted
    statuses = Counter(s3_outage.finished[i]["status"] for i in ids)
    assert statuses == {"completed": len(ids)}, statuses
    for n, workload_id in enumerate(s3_outage.accepted):
        assert s3_outage.finished[workload_id]["result"]["n"] == n
    assert_unchanged(s3_outage.url, "gated-s3", s3_outage.finished)
    status = s3_outage.status_after
    # Requests that timed out on the client may still have been accepted: they completed too.
    assert status["queue_depth"] == status["in_progress"] == 0
    # An outage longer than the storage lease's TTL makes the gateway step down and take its
    # lease (and its engine) back when storage returns: the counters then start again from
    # the recovered workloads, but every one of them completed (asserted above, by id).
    assert status["completed"] == status["submitted"] > 0
    assert s3_outage.after["status"] == "completed"  # service resumed with storage
    assert s3_outage.after["result"]["n"] == -1


def test_s3_outage_answers_503_with_retry_after_in_seconds(s3_outage: Outage) -> None:
    answers = [(round(elapsed, 1), code) for elapsed, code, _ in s3_outage.during]
    assert all(code == 503 for _, code in answers), answers
    # the storage deadline, plus the wait for a thread while the stalled calls hold others
    assert all(elapsed < 3 * STORAGE_TIMEOUT_S for elapsed, _ in answers), answers
    assert all(headers["retry-after"] == "5" for _, _, headers in s3_outage.during)
