"""`asyncnb serve --durability fsync`: concurrent submits share fsyncs (group commit), and every
workload that got a 202 completes after a kill -9 and a restart on the same storage."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway
from .test_durability import wait_all

SUBMITS = 200
CLIENTS = 32


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} is not in /metrics"
    return float(match.group(1))


def test_fsync_mode_group_commits_and_survives_kill9(tmp_path: Path) -> None:
    args = ("--storage", str(tmp_path / "storage"), "--workers", "2", "--durability", "fsync")
    gateway = Gateway(*args).start()
    try:
        with Client(gateway.url) as client:
            client.deploy(predictors.Sleepy, "fsynced", max_concurrency=1)
        gateway.wait_ready("fsynced")
        with gateway.client() as http:  # over 1 MiB: streamed beside the journal, fsynced too
            big = http.post("/fsynced", json={"name": "big", "pad": "x" * (3 << 19)})
            assert big.status_code == 202, big.text

        def submit_some(first: int) -> list[tuple[int, str]]:
            accepted = []
            with httpx.Client(base_url=gateway.url, timeout=60) as http:
                for n in range(first, SUBMITS, CLIENTS):
                    answer = http.post("/fsynced", json={"sleep": 0.02, "name": n})
                    assert answer.status_code == 202, answer.text
                    accepted.append((n, answer.json()["id"]))
            return accepted

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(submit_some, range(CLIENTS)))
        with gateway.client() as http:
            metrics = http.get("/metrics").text
    finally:
        gateway.kill9()  # right after the last 202
    accepted = dict(pair for chunk in results for pair in chunk)
    assert sorted(accepted) == list(range(SUBMITS))
    fsyncs = metric(metrics, "asyncnb_journal_fsyncs_total")
    assert 0 < fsyncs < SUBMITS, fsyncs  # submits (and the finals so far) shared fsyncs
    assert metric(metrics, "asyncnb_journal_fsync_seconds_count") == fsyncs

    restarted = Gateway(*args).start()
    try:
        with restarted.client() as http:
            finished = wait_all(http, "fsynced", list(accepted.values()))
        assert {info["status"] for info in finished.values()} == {"completed"}
        for n, workload_id in accepted.items():
            assert finished[workload_id]["result"]["name"] == n
        with restarted.client() as http:
            (done,) = wait_all(http, "fsynced", [big.json()["id"]]).values()
        assert done["status"] == "completed" and done["result"]["name"] == "big"
    finally:
        restarted.stop()
