"""The Python client rides out a takeover: gateway A is killed (kill -9) while clients keep
submitting, standby B takes over, and no submit raises, none makes a second workload, and
every workload completes (real `asyncnb serve` processes on one local journal)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx

from asyncnb.client import AsyncAPI, Client, Workload

from ..support import predictors
from ..support.processes import READY, Gateway
from .test_standby import Standby

TTL = 3.0


class Seen:
    """What one client's connection pool went through: requests, and answers by status."""

    def __init__(self, client: Client) -> None:
        self.requests: list[str] = []
        self.statuses: list[int] = []
        client.http.event_hooks = {
            "request": [lambda request: self.requests.append(str(request.url))],
            "response": [lambda response: self.statuses.append(response.status_code)],
        }

    @property
    def unanswered(self) -> int:  # connection refused or reset: no response at all
        return len(self.requests) - len(self.statuses)


class Submitter(threading.Thread):
    """Submits `count` marks through `client`'s own retrying submit, one after another."""

    def __init__(self, client: Client, prefix: str, count: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.client, self.pause = client, pause
        self.names = [f"{prefix}{n}" for n in range(count)]
        self.workloads: dict[str, Workload] = {}
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            api = AsyncAPI(self.client, "marks")  # no status read first: submits meet it all
            for name in self.names:
                self.workloads[name] = api.submit({"name": name, "sleep": 0.05})
                time.sleep(self.pause)
        except BaseException as exc:
            self.errors.append(exc)


def runs(path: Path) -> dict[str, list[str]]:
    """name → the pid of each process that ran it (the Appending predictor's log)."""
    found: dict[str, list[str]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                name, pid = line.split()
                found[name].append(pid)
    return found


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_submits_ride_out_a_kill9_takeover_with_one_workload_each(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    storage = str(tmp_path / "storage")
    args = ("--storage", storage, "--workers", "1", "--standby", "--lease-ttl", str(TTL))
    active = Gateway(*args).start()
    standby: Gateway | None = None
    clients: list[Client] = []
    try:
        standby = Standby(*args).start()
        with Client(active.url) as admin:
            admin.deploy(predictors.Appending, "marks", {"path": str(log)})
        active.wait_ready("marks")
        both = Client([active.url, standby.url])  # fails over along the list
        only_b = Client(standby.url)  # the standby's own URL: 503 until it takes over
        clients += [both, only_b]
        seen_both, seen_b = Seen(both), Seen(only_b)
        failing_over = Submitter(both, "l", 40, pause=0.05)
        waiting = Submitter(only_b, "s", 10, pause=0.0)
        failing_over.start()
        wait_until(lambda: len(failing_over.workloads) >= 10, 60, "no submits to A")
        waiting.start()
        wait_until(lambda: seen_b.statuses, 30, "the standby did not answer")
        active.kill9()  # its workers too, with workloads queued, running and on the way
        ran_on_active = runs(log)
        standby.wait_for(READY, TTL + 30)
        for submitter in (failing_over, waiting):
            submitter.join(90)
            assert not submitter.is_alive(), "a submit still retrying"
            assert submitter.errors == [], submitter.errors
        print(
            f"the failing-over client: {seen_both.unanswered} unanswered requests, "
            f"{seen_both.statuses.count(503)} 503s; the standby's: {seen_b.statuses.count(503)}"
        )
        assert seen_both.unanswered >= 1  # it did meet the dead gateway
        assert seen_b.statuses.count(503) >= 1  # and the other met the standby
        assert both.url == standby.url

        workloads = {**failing_over.workloads, **waiting.workloads}
        assert set(workloads) == set(failing_over.names) | set(waiting.names)
        assert len({w.id for w in workloads.values()}) == len(workloads)  # one id per submit
        for name, workload in workloads.items():  # read through the client that failed over
            assert workload.result(timeout=60) == {"name": name}
        ran = runs(log)
        print(f"{sum(len(p) - 1 for p in ran.values())} reruns of {len(ran)} workloads")
        assert set(ran) == set(workloads)
        # Never twice on one gateway's worker (a second workload of one submit would be);
        # twice only for what A ran before it died without its final record: a crash rerun.
        assert all(len(set(pids)) == len(pids) for pids in ran.values()), ran
        reruns = {name for name, pids in ran.items() if len(pids) > 1}
        assert reruns <= set(ran_on_active), ran
        assert httpx.get(f"{standby.url}/healthz", timeout=10).status_code == 200
    finally:
        for client in clients:
            client.close()
        active.stop()
        if standby is not None:
            standby.stop()
