"""`asyncnb submit --follow`, against a mock gateway in this process: outputs on stdout, logs
and progress on stderr as they come, then the result as --wait prints it; Ctrl-C stops
following (exit 130) without cancelling."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from asyncnb.cli import main
from asyncnb.client import Client

WID = "c" * 32
ERROR = {"type": "ValueError", "message": "odd n", "traceback": "Traceback ...\n"}


def event(event_id: int, type: str, attempt: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": type,
        "id": WID,
        "api": "demo",
        "attempt": attempt,
        "timestamp": "2026-12-02T10:00:00Z",
        **fields,
    }


def frame(data: dict[str, Any] | str) -> bytes:
    if isinstance(data, str):  # "interrupt": Ctrl-C while reading
        raise KeyboardInterrupt
    return f"id: {data['event_id']}\nevent: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


class Gateway:
    def __init__(self, events: list[Any], record: dict[str, Any]) -> None:
        self.events = events
        self.record = {"id": WID, "api": "demo", **record}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if (request.method, path) == ("GET", "/demo"):
            return httpx.Response(200, json={"name": "demo", "state": "ready"})
        if (request.method, path) == ("POST", "/demo"):
            return httpx.Response(202, json={"id": WID, "status": "in_queue"})
        if path == f"/demo/{WID}/events":

            def body() -> Iterator[bytes]:
                for item in self.events:
                    yield frame(item)

            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=body()
            )
        if (request.method, path) == ("GET", f"/demo/{WID}"):
            return httpx.Response(200, json=self.record)
        if path == f"/demo/{WID}/result":
            return httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"})
        return httpx.Response(404, json={"detail": "not found"})


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("ASYNCNB_STORAGE", "ASYNCNB_TOKEN", "ASYNCNB_GATEWAY"):
        monkeypatch.delenv(name, raising=False)

    def plug(gateway: Gateway) -> Gateway:
        def client_of(ctx: Any) -> Client:
            client = Client("http://gw.invalid", token="t")
            client._http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(gateway))
            return client

        monkeypatch.setattr("asyncnb.cli.workloads.client_of", client_of)
        return gateway

    return plug


def submit(*args: str) -> Result:
    return CliRunner().invoke(main, ["submit", "demo", *args], prog_name="asyncnb")


STREAM = [
    event(1, "start"),
    event(2, "log", line="loading the model", stream="stdout"),
    event(3, "output", index=0, value={"n": 0, "label": "a"}, encoding="json"),
    event(4, "progress", fraction=0.5, message="half way"),
    event(5, "output", index=1, value="plain text", encoding="text"),
    event(6, "start", attempt=2),
    event(7, "output", attempt=2, index=1, value="plain text", encoding="text"),
    event(
        8,
        "output",
        attempt=2,
        index=2,
        value=base64.b64encode(b"\x00" * 12).decode(),
        encoding="base64",
        content_type="image/png",
    ),
    event(9, "log", attempt=2, line="WARNING done", stream="logging", level="WARNING"),
]


def test_follow_prints_outputs_logs_and_progress_then_the_result(use: Any) -> None:
    result_value = [{"n": 0, "label": "a"}, "plain text", "x"]
    done = {"status": "completed", "result": result_value}
    gateway = use(Gateway([*STREAM, event(10, "completed", **done)], done))
    result = submit("--json", '{"text": "hi"}', "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        '{"n":0,"label":"a"}',
        "plain text",  # once: attempt 2's index 1 is not shown again
        "<12 bytes image/png>",
        *json.dumps(result_value, indent=2).splitlines(),  # as --wait prints it
    ]
    assert result.stderr.splitlines() == [
        "loading the model",
        "progress 50% half way",
        "attempt 2 started",
        "WARNING done",
    ]
    posted = [r for r in gateway.requests if r.method == "POST"]
    assert len(posted) == 1 and json.loads(posted[0].content) == {"text": "hi"}


def test_follow_with_a_file_payload_prints_binary_results_raw(use: Any, tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG....")
    done = {"status": "completed", "result_content_type": "image/png"}
    gateway = use(Gateway([event(1, "start"), event(2, "completed", **done)], done))
    result = submit(str(image), "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"\x89PNG"
    (posted,) = [r for r in gateway.requests if r.method == "POST"]
    assert posted.headers["content-type"] == "image/png" and posted.content == b"\x89PNG...."


@pytest.mark.parametrize(
    ("end", "fragment"),
    [
        ({"status": "failed", "error": ERROR}, "failed: ValueError: odd n"),
        ({"status": "cancelled"}, "was cancelled"),
    ],
)
def test_follow_exits_non_zero_as_wait_does(use: Any, end: dict[str, Any], fragment: str) -> None:
    events = [STREAM[2], event(10, end["status"], **end)]
    use(Gateway(events, end))
    result = submit("--json", "{}", "--follow")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ['{"n":0,"label":"a"}']
    assert result.stderr.splitlines()[-1].startswith("error: ") and fragment in result.stderr


def test_ctrl_c_stops_following_and_leaves_the_workload_running(use: Any) -> None:
    gateway = use(Gateway([STREAM[2], "interrupt"], {"status": "in_progress"}))
    result = submit("--json", "{}", "--follow")
    assert result.exit_code == 130
    assert result.stdout.splitlines() == ['{"n":0,"label":"a"}']
    (line,) = result.stderr.splitlines()
    assert f"stopped following {WID}" in line and f"asyncnb cancel demo {WID}" in line
    assert not [r for r in gateway.requests if r.method == "DELETE"]


def test_follow_refuses_a_timeout_before_submitting(use: Any) -> None:
    gateway = use(Gateway([], {}))
    result = submit("--json", "{}", "--follow", "--timeout", "5")
    assert result.exit_code == 1 and "--timeout goes with --wait" in result.stderr
    assert gateway.requests == []
