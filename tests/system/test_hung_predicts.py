"""A hung predict fails with Timeout, and then its worker process is replaced (issue 17).

One worker (`--workers 1`, a Nanny): the predict that hangs, sleeping or spinning in pure
Python, holds that process; once its timeout_s has passed and the process's other chunks have
ended, the gateway restarts the worker through its Nanny. Nothing else submitted is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import BIN, Gateway, stop_group
from .test_durability import wait_all

TIMEOUT_S = 2


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended too
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except FileNotFoundError:
        return False


def submit(http: httpx.Client, api: str, payload: dict) -> str:
    response = http.post(f"/{api}", json=payload)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("spin", [False, True], ids=["sleep", "busy-loop"])
def test_hung_predict_times_out_and_its_worker_is_replaced(tmp_path: Path, spin: bool) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    gateway = Gateway("--storage", str(tmp_path / "s"), "--workers", "1").start()
    try:
        with Client(gateway.url) as client:
            client.deploy(
                predictors.HangsWhenAsked,
                "hangs",
                config={"folder": str(marks), "spin": spin},
                timeout_s=TIMEOUT_S,
            )
        gateway.wait_ready("hangs")
        with gateway.client() as http:
            first = submit(http, "hangs", {"name": "first"})
            before = wait_all(http, "hangs", [first])[first]["result"]["pid"]

            hung = submit(http, "hangs", {"hang": True})
            submitted = time.monotonic()
            others = [submit(http, "hangs", {"name": n, "sleep": 0.2}) for n in range(6)]
            failed = wait_all(http, "hangs", [hung], timeout=60)[hung]
            timed_out = time.monotonic()
            assert failed["status"] == "failed"
            assert failed["error"]["type"] == "Timeout"

            [mark] = list(marks.iterdir())
            holder = int(mark.name)
            assert holder == before  # the one worker ran it
            deadline = submitted + TIMEOUT_S + 30
            while alive(holder):
                assert time.monotonic() < deadline, f"worker {holder} still runs its hung predict"
                time.sleep(0.05)
            gone = time.monotonic()

            finished = wait_all(http, "hangs", others, timeout=60)
            done = time.monotonic()
            assert {finished[i]["status"] for i in others} == {"completed"}  # none lost
            assert sorted(finished[i]["result"]["name"] for i in others) == list(range(6))
            again = wait_all(http, "hangs", [hung])[hung]
            assert again["status"] == "failed" and again["attempts"] == 1  # never run again
            print(
                f"\n{'busy loop' if spin else 'sleep'}, after the submit: Timeout seen at "
                f"{timed_out - submitted:.1f} s, old worker gone at {gone - submitted:.1f} s, "
                f"the 6 others done at {done - submitted:.1f} s"
            )

            after = submit(http, "hangs", {"name": "after"})
            result = wait_all(http, "hangs", [after], timeout=60)[after]
            assert result["status"] == "completed"
            assert result["result"]["pid"] != holder
            assert alive(result["result"]["pid"])
            assert list(marks.iterdir()) == [mark]  # the hung predict never ran again
    finally:
        gateway.stop()


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
def test_external_worker_is_replaced_through_its_nanny_else_left(
    tmp_path: Path, nanny: bool
) -> None:
    """`--scheduler`: a `dask worker` under a Nanny is restarted; one without keeps working,
    its thread left running, with one warning in its log."""
    marks = tmp_path / "marks"
    marks.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_args = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    scheduler_args += ["--scheduler-file", str(scheduler_file)]
    procs = [_start([str(BIN / "dask"), "scheduler", *scheduler_args], tmp_path / "scheduler.log")]
    gateway: Gateway | None = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker_log = tmp_path / "worker.log"
        worker_args = ["--nthreads", "2", "--host", "127.0.0.1", "--no-dashboard"]
        if not nanny:
            worker_args.append("--no-nanny")
        procs.append(_start([str(BIN / "dask"), "worker", address, *worker_args], worker_log))
        gateway = Gateway("--scheduler", address, "--storage", str(tmp_path / "s")).start()
        with Client(gateway.url) as client:
            client.deploy(
                predictors.HangsWhenAsked, "hangs", config={"folder": str(marks)}, timeout_s=1
            )
        gateway.wait_ready("hangs")
        with gateway.client() as http:
            first = submit(http, "hangs", {"name": "first"})
            before = wait_all(http, "hangs", [first])[first]["result"]["pid"]
            hung = submit(http, "hangs", {"hang": True})
            failed = wait_all(http, "hangs", [hung], timeout=60)[hung]
            assert failed["status"] == "failed" and failed["error"]["type"] == "Timeout"
            [mark] = list(marks.iterdir())
            assert int(mark.name) == before
            if nanny:
                deadline = time.monotonic() + 31
                while alive(before):
                    assert time.monotonic() < deadline, "the external worker was not replaced"
                    time.sleep(0.05)
            after = submit(http, "hangs", {"name": "after"})
            result = wait_all(http, "hangs", [after], timeout=60)[after]
            assert result["status"] == "completed"
            if nanny:
                assert result["result"]["pid"] != before
            else:
                assert result["result"]["pid"] == before and alive(before)
                text = worker_log.read_text()
                assert text.count("has no Nanny to restart it") == 1
    finally:
        if gateway is not None:
            gateway.stop()
        for proc in procs:
            stop_group(proc)
