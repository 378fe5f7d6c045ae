"""One active gateway per storage: a second one stands by and takes over (engine/lease.py)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import BIN, READY, Gateway, MotoServer

STANDBY = re.compile(r"standby at (http://\S+)")
TTL = 3.0


class Standby(Gateway):
    """`asyncnb serve --standby` started while another gateway serves its storage."""

    ready_line = STANDBY  # it says where it stands by, then `ready at` once it serves


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


def executions(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.strip())


def assert_standby(standby: Standby, active_url: str) -> None:
    health = httpx.get(f"{standby.url}/healthz", timeout=10)
    assert health.status_code == 503
    assert health.json() == {"status": "standby", "active": active_url}
    assert httpx.get(f"{standby.url}/livez", timeout=10).status_code == 200
    submit = httpx.post(f"{standby.url}/marks", json={"name": "x"}, timeout=10)
    assert submit.status_code == 503 and int(submit.headers["retry-after"]) >= 1
    assert "standby" in submit.json()["detail"]


def wait_all_completed(url: str, ids: list[str], timeout: float = 120) -> dict[str, Any]:
    records: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as http:
        for workload_id in ids:
            while True:
                try:
                    answer = http.get(f"/marks/{workload_id}")
                    if answer.status_code == 200 and answer.json()["status"] == "completed":
                        records[workload_id] = answer.json()
                        break
                    assert answer.json().get("status") not in ("failed", "cancelled"), answer.text
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{workload_id} not completed"
                time.sleep(0.1)
    return records


def submit_all(url: str, names: list[str], sleep: float) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=30) as http:
        return {
            name: http.post("/marks", json={"name": name, "sleep": sleep}).json()["id"]
            for name in names
        }


def takeover_scenario(args: tuple[str, ...], env: dict[str, str] | None, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    active = Gateway(*args, env=env).start()
    standby: Standby | None = None
    try:
        standby = Standby(*args, env=env).start()
        assert_standby(standby, active.url)
        with Client(active.url) as client:
            client.deploy(predictors.Appending, "marks", {"path": str(log)})
        active.wait_ready("marks")
        # while both run, only the active gateway executes anything
        first = submit_all(active.url, [f"a{n}" for n in range(20)], 0.0)
        wait_all_completed(active.url, list(first.values()))
        assert executions(log) == Counter(list(first))  # each exactly once
        assert_standby(standby, active.url)
        # then the active one dies with work queued and running
        second = submit_all(active.url, [f"b{n}" for n in range(20)], 0.2)
        while not executions(log).keys() & second.keys():
            time.sleep(0.05)
        killed_at = time.monotonic()
        active.kill9()  # its workers too
        ran_on_active = executions(log)
        standby.wait_for(READY, TTL + 30)
        took = time.monotonic() - killed_at
        print(f"ready {took:.1f} s after kill -9 of the active gateway")
        assert took < TTL + 20, took  # the TTL, then starting Dask and recovering
        assert httpx.get(f"{standby.url}/healthz", timeout=10).status_code == 200
        records = wait_all_completed(standby.url, [*first.values(), *second.values()])
        assert {r["result"]["name"] for r in records.values()} == set(first) | set(second)
        ran = executions(log)
        print(f"{sum(ran.values()) - len(ran)} reruns of {len(ran)} workloads")
        assert set(ran) == set(first) | set(second)
        # A rerun only for what was running when the active one died: its chunk had run
        # on the active gateway's worker, with no final record written yet.
        reruns = {name for name, count in ran.items() if count > 1}
        assert reruns <= set(ran_on_active) & set(second), ran
        assert max(ran.values()) <= 2, ran
    finally:
        active.stop()
        if standby is not None:
            standby.stop()


def test_local_journal_standby_takes_over_after_kill9(tmp_path: Path) -> None:
    storage = str(tmp_path / "storage")
    args = ("--storage", storage, "--workers", "1", "--standby", "--lease-ttl", str(TTL))
    takeover_scenario(args, None, tmp_path)


def test_s3_standby_runs_nothing_then_takes_over_after_kill9(
    moto: MotoServer, tmp_path: Path
) -> None:
    moto.make_bucket("standby")
    args = ("--storage", "s3://standby/p", "--workers", "1", "--standby")
    takeover_scenario((*args, "--lease-ttl", str(TTL)), moto.env, tmp_path)


def test_a_second_gateway_without_standby_refuses_in_one_line(moto: MotoServer) -> None:
    moto.make_bucket("refuse")
    args = ("--storage", "s3://refuse/p", "--workers", "1")
    active = Gateway(*args, env=moto.env).start()
    try:
        second = subprocess.run(
            [str(BIN / "asyncnb"), "serve", "--port", "0", *args],
            capture_output=True,
            text=True,
            env=active.env,
            timeout=60,
        )
        assert second.returncode != 0
        assert f"already served by the gateway at {active.url}" in second.stderr, second.stderr
    finally:
        active.stop()


def test_sigterm_hands_the_lease_over_at_once(moto: MotoServer) -> None:
    moto.make_bucket("handover")
    ttl = 60.0
    args = ("--storage", "s3://handover/p", "--workers", "1", "--standby")
    args = (*args, "--lease-ttl", str(ttl))
    active = Gateway(*args, env=moto.env).start()
    standby: Standby | None = None
    try:
        standby = Standby(*args, env=moto.env).start()
        assert_standby(standby, active.url)
        assert active.proc is not None
        stopped_at = time.monotonic()
        active.proc.send_signal(signal.SIGTERM)
        standby.wait_for(READY, ttl)
        took = time.monotonic() - stopped_at
        print(f"ready {took:.1f} s after SIGTERM of the active gateway (TTL {ttl:g} s)")
        assert took < ttl / 3, took
        assert active.proc.wait(30) == 0
        assert httpx.get(f"{standby.url}/healthz", timeout=10).status_code == 200
    finally:
        active.stop()
        if standby is not None:
            standby.stop()
