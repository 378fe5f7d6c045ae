"""Streaming outputs, logs and the event stream (issue 16), with real `asyncnb serve` processes
and Dask workers: a generator predictor's outputs arrive before it completes, `Last-Event-ID`
resumes, the stream survives a gateway killed with SIGKILL, concurrent workloads keep their
own logs, and webhooks deliver the events asked for, signed."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway, WebhookReceiver, free_port


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of an open SSE response as they arrive: {"id", "event", "data", "at"}."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                fields["at"] = time.monotonic()
                yield fields
            fields = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[name] = json.loads(value) if name == "data" else value


def read_all(http: httpx.Client, path: str, after: int | None = None) -> list[dict[str, Any]]:
    headers = {"Accept": "text/event-stream"}
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    with http.stream("GET", path, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        return list(sse_events(response))


SECRETS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def streaming(client: Client, gateway: Gateway) -> Gateway:
    SECRETS["streamer"] = client.deploy(predictors.Streamer, "streamer").webhook_secret
    gateway.wait_ready("streamer")
    return gateway


def test_outputs_arrive_before_the_workload_completes(streaming: Gateway) -> None:
    with streaming.client() as http:
        workload_id = http.post("/streamer", json={"n": 5, "delay": 0.3}).json()["id"]
        path = f"/streamer/{workload_id}/events"
        seen: list[dict[str, Any]] = []
        status_at_first_output = None
        with http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(response):
                seen.append(event)
                if event["event"] == "output" and status_at_first_output is None:
                    status_at_first_output = http.get(f"/streamer/{workload_id}").json()["status"]
        logs = http.get(f"/streamer/{workload_id}/logs")
        record = http.get(f"/streamer/{workload_id}").json()
    assert status_at_first_output == "in_progress"
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "start" and kinds[-1] == "completed"
    outputs = [e["data"] for e in seen if e["event"] == "output"]
    assert [o["value"] for o in outputs] == [{"index": n, "tag": None} for n in range(5)]
    assert [o["index"] for o in outputs] == list(range(5))
    assert [int(e["id"]) for e in seen] == list(range(1, len(seen) + 1))
    # each output came out on its own, about 0.3 s after the one before
    arrivals = [e["at"] for e in outputs_at(seen)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.1, gaps
    assert [e["data"]["line"] for e in seen if e["event"] == "log"] == [
        f"making output {n}" for n in range(5)
    ]
    assert record["result"] == [{"index": n, "tag": None} for n in range(5)]
    assert logs.text == "".join(f"making output {n}\n" for n in range(5))


def outputs_at(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "output"]


def test_last_event_id_resumes_without_duplicates(streaming: Gateway) -> None:
    with streaming.client() as http:
        workload_id = http.post("/streamer", json={"n": 6, "delay": 0.2}).json()["id"]
        path = f"/streamer/{workload_id}/events"
        first: list[dict[str, Any]] = []
        with http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
            for event in sse_events(response):
                first.append(event)
                if len(outputs_at(first)) == 2:
                    break  # the client goes away mid-stream
        rest = read_all(http, path, after=int(first[-1]["id"]))
        whole = read_all(http, path)  # a finished workload replays its whole history
    ids = [int(e["id"]) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert [e["data"] for e in first + rest] == [e["data"] for e in whole]
    assert [o["data"]["index"] for o in outputs_at(first + rest)] == list(range(6))
    assert rest[-1]["event"] == "completed"


def test_logs_of_concurrent_workloads_stay_apart(tmp_path: Path) -> None:
    """One worker process, running two workloads at a time on two threads: each workload's
    log holds its own lines only."""
    gateway = Gateway(
        "--storage", str(tmp_path / "s"), "--workers", "1", "--threads-per-worker", "2"
    ).start()
    try:
        with Client(gateway.url) as owner:
            owner.deploy(predictors.Chatty, "chatty", max_concurrency=2)
        gateway.wait_ready("chatty")
        with gateway.client() as http:
            ids = {
                tag: http.post("/chatty", json={"tag": tag, "lines": 60}).json()["id"]
                for tag in ("alpha", "beta", "gamma", "delta")
            }
            records = []
            for workload_id in ids.values():
                record = http.get(f"/chatty/{workload_id}", headers={"Prefer": "wait=60"}).json()
                assert record["status"] == "completed", record
                records.append(record)
            logs = {tag: http.get(f"/chatty/{wid}/logs").text for tag, wid in ids.items()}
    finally:
        gateway.stop()
    assert len({r["result"]["pid"] for r in records}) == 1  # one worker process
    overlaps = sum(
        1
        for a in records
        for b in records
        if a["id"] < b["id"]
        and a["started_at"] < b["finished_at"]
        and b["started_at"] < a["finished_at"]
    )
    assert overlaps >= 1, records  # some ran at the same time
    for tag, text in logs.items():
        lines = text.splitlines()
        assert len(lines) == 180, (tag, len(lines))
        assert all(tag in line for line in lines), (tag, [x for x in lines if tag not in x][:3])
        assert f"{tag} stdout 59" in lines and f"{tag} stderr 0" in lines
        assert f"WARNING chatty: {tag} logging 7" in lines


def test_webhooks_deliver_the_chosen_events_signed(streaming: Gateway) -> None:
    secret = SECRETS["streamer"]
    with WebhookReceiver() as receiver, streaming.client() as http:
        workload_id = http.post(
            "/streamer",
            json={"n": 4, "delay": 0.25},
            headers={"X-Webhook-URL": receiver.url, "X-Webhook-Events": "output,completed"},
        ).json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            d["json"]["type"] == "completed" for d in receiver.received
        ):
            time.sleep(0.05)
    verified = [Webhook(secret).verify(d["body"], d["headers"]) for d in receiver.received]
    assert verified[-1]["type"] == "completed" and verified[-1]["id"] == workload_id
    streamed = [v for v in verified if v["type"] == "events"]
    assert len(streamed) >= 2  # the outputs came 250 ms apart: more than one delivery
    events = [e for v in streamed for e in v["events"]]
    assert {e["type"] for e in events} == {"output"}
    assert [e["index"] for e in events] == [0, 1, 2, 3]
    message_ids = [d["headers"]["webhook-id"] for d in receiver.received]
    assert len(set(message_ids)) == len(message_ids)
    assert message_ids[-1] == f"msg_{workload_id}"


def test_the_stream_survives_a_gateway_killed_mid_stream(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    port = free_port()
    args = ("--storage", str(storage), "--workers", "1", "--port", str(port))
    first = Gateway(*args).start()
    try:
        with Client(first.url) as owner:
            owner.deploy(predictors.Streamer, "streamer")
        first.wait_ready("streamer")
        with first.client() as http:
            workload_id = http.post("/streamer", json={"n": 8, "delay": 0.3}).json()["id"]
            path = f"/streamer/{workload_id}/events"
            before: list[dict[str, Any]] = []
            with http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
                for event in sse_events(response):
                    before.append(event)
                    if len(outputs_at(before)) == 2:
                        break
        first.kill9()
    finally:
        first.stop()
    second = Gateway(*args).start()
    try:
        assert second.url == first.url
        with second.client() as http:
            rest = read_all(http, path, after=int(before[-1]["id"]))
    finally:
        second.stop()
    events = before + rest
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids)), ids  # no duplicates, in order
    assert ids == list(range(1, len(ids) + 1))  # and no gaps
    starts = [e["data"]["attempt"] for e in events if e["event"] == "start"]
    assert starts == [1, 2], [(e["event"], e["data"]["attempt"]) for e in events]
    terminal = events[-1]["data"]
    assert terminal["type"] == "completed" and terminal["attempt"] == 2
    # the result is the last attempt's outputs, each once
    assert terminal["result"] == [{"index": n, "tag": None} for n in range(8)]
    last_run = [
        e["data"]["index"] for e in events if e["event"] == "output" and e["data"]["attempt"] == 2
    ]
    assert last_run == list(range(8))


def test_the_python_client_streams_outputs_and_logs(client: Client, streaming: Gateway) -> None:
    workload = client.api("streamer").submit({"n": 4, "delay": 0.2, "tag": "py"})
    kinds = []
    for event in workload.stream():
        kinds.append(event["type"])
        if event["type"] == "output":
            break  # the first output, while the workload runs...
    assert workload.status() == "in_progress", kinds
    values = list(workload.outputs())  # ...and all of them from the start
    assert values == [{"index": n, "tag": "py"} for n in range(4)]
    assert workload.logs() == "".join(f"making output {n}\n" for n in range(4))
    assert workload.result() == values


def test_the_cli_follows_a_workload(streaming: Gateway) -> None:
    from .test_cli import run

    followed = run(
        "submit",
        "streamer",
        "--json",
        '{"n": 3, "delay": 0.2, "tag": "cli"}',
        "--follow",
        gateway=streaming,
    )
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert lines[:3] == [
        json.dumps({"index": n, "tag": "cli"}, separators=(",", ":")) for n in range(3)
    ], lines
    assert "making output 2" in followed.stderr
    assert "Traceback" not in followed.stderr
