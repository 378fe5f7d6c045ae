"""`%%async_api` through a real InteractiveShell, deploying to a real gateway process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import asyncnb
from asyncnb.client import AsyncAPI, handles
from asyncnb.errors import UsageError as AsyncNBUsageError

from ..support.processes import Gateway

CELL = """
import math

def helper(x):
    return math.floor(x * 10)

class Scorer:
    def __init__(self, config):
        self.bonus = config.get("bonus", 0)

    def predict(self, payload):
        return {"score": helper(payload["x"]) + self.bonus}
"""


@pytest.fixture(scope="module")
def shell(gateway: Gateway) -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "asyncnb")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("ASYNCNB_GATEWAY", gateway.url)
    yield ip
    patcher.undo()


def test_cell_magic_deploys_the_cell_class(shell: InteractiveShell, gateway: Gateway) -> None:
    api = shell.run_cell_magic(
        "async_api", "scorer --config '{\"bonus\": 5}' --max-concurrency 2", CELL
    )
    assert isinstance(api, AsyncAPI) and api.name == "scorer"
    assert "Scorer" in shell.user_ns and "helper" in shell.user_ns  # ran in the user namespace
    gateway.wait_ready("scorer")
    assert api.submit({"x": 0.25}).result(timeout=30) == {"score": 7}
    assert api.status()["options"]["max_concurrency"] == 2
    assert asyncnb.api("scorer") is api
    again = shell.run_cell_magic("async_api", "scorer", CELL.replace("+ self.bonus", "+ 100"))
    assert again is api
    info = gateway.wait_ready("scorer")
    assert info["version"] == 2
    assert api.submit({"x": 0.25}).result(timeout=30) == {"score": 102}
    text = api._repr_mimebundle_()["text/plain"]  # outside a kernel: a readable summary
    assert "scorer v2 ready" in text


def test_cell_magic_errors_are_usage_errors(shell: InteractiveShell) -> None:
    two = CELL + "\nclass Other:\n    def predict(self, payload):\n        return 1\n"
    cases = [
        ("nothing", "x = 1", "defines no predictor"),
        ("several", two, "several predictors (Scorer, Other)"),
        ("pick --predictor Missing", CELL, "no such class"),
        ("badconfig --config '{nope'", CELL, "--config is not valid JSON"),
        ("badconfig --config '[1]'", CELL, "JSON object"),
        ("Bad_Name", CELL, "invalid API name"),
        ("badopt --max-concurrency 0", CELL, "max_concurrency"),
        ("badopt --max-batch-size lots", CELL, "max_batch_size"),
        ("badflag --no-such-flag 1", CELL, "unrecognized arguments"),
    ]
    for line, cell, message in cases:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            shell.run_cell_magic("async_api", line, cell)
    picked = shell.run_cell_magic("async_api", "picked --predictor Other", two)
    assert picked.name == "picked"


def test_line_magics(
    shell: InteractiveShell, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell_magic("async_api", "listed", CELL)
    gateway.wait_ready("listed")
    shell.run_line_magic("async_api", "list")
    assert "listed" in capsys.readouterr().out
    shell.run_line_magic("async_api", "status listed")
    assert '"state": "ready"' in capsys.readouterr().out
    handles["listed"].submit({"bad": "payload"})
    time.sleep(1.5)
    shell.run_line_magic("async_api", "logs listed")
    assert "KeyError" in capsys.readouterr().out
    shell.run_line_magic("async_api", "delete listed")
    assert "deleted listed" in capsys.readouterr().out
    for line in ("", "frobnicate", "status", "status a b", "status no-such-api"):
        with pytest.raises(UsageError):
            shell.run_line_magic("async_api", line)


def test_help_lists_every_option(shell: InteractiveShell) -> None:
    doc = shell.find_cell_magic("async_api").__doc__ or ""
    for flag in (
        "--gpu",
        "--max-concurrency",
        "--max-batch-size",
        "--timeout-s",
        "--predictor",
        "--gateway",
        "--min-replicas",
        "--webhook-url",
    ):
        assert flag in doc


def test_dashboard_traits_follow_the_workloads(shell: InteractiveShell, gateway: Gateway) -> None:
    api = shell.run_cell_magic("async_api", "watched", CELL)
    gateway.wait_ready("watched")
    dashboard = api.dashboard()
    assert dashboard is api.dashboard()  # cached
    assert not dashboard.running  # no event loop here: refreshed on demand
    before = dashboard.completed
    api.gather([api.submit({"x": i / 10}) for i in range(5)], timeout=30, progress=False)
    dashboard.refresh()
    assert dashboard.completed == before + 5
    assert dashboard.state == "ready" and dashboard.version == 1
    assert "completed 5" in dashboard.counts.value
    assert api.url in dashboard.header.value and "curl -s -X POST" in dashboard.header.value
    assert sum(r["status"] == "completed" for r in dashboard.table.records) >= 5
    assert "asyncnb-dashboard" in dashboard._dom_classes
    dashboard.close()
    assert api.dashboard() is not dashboard  # a closed one is replaced


def test_the_example_option_and_the_scaling_bounds(
    shell: InteractiveShell, gateway: Gateway
) -> None:
    api = shell.run_cell_magic(
        "async_api", "scaled --example '{\"x\": 0.5}' --max-replicas 3", CELL
    )
    gateway.wait_ready("scaled")
    assert api.status()["options"]["example"] == {"x": 0.5}  # a deploy option like any
    dashboard = api.dashboard()
    assert dashboard.example_payload == '{"x": 0.5}'
    assert dashboard.curl.endswith("""-d '{"x": 0.5}'""")
    assert "ASYNCNB_TOKEN" not in dashboard.curl  # this gateway has no token
    info = api.set_scaling(min_replicas=0, max_replicas=2)  # PATCH /apis/scaled
    assert info["version"] == 1 and info["options"]["max_replicas"] == 2
    assert info["options"]["min_replicas"] == 0 and info["options"]["example"] == {"x": 0.5}
    with pytest.raises(AsyncNBUsageError, match="min_replicas must not exceed max_replicas"):
        api.set_scaling(min_replicas=5)
    assert api.submit({"x": 0.25}).result(timeout=30) == {"score": 2}
    dashboard.close()


def test_share_prints_a_key_and_a_curl_line(
    shell: InteractiveShell, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell_magic("async_api", "shared", CELL)
    gateway.wait_ready("shared")
    capsys.readouterr()
    shell.run_line_magic("async_api", "share shared --to bob --scope invoke --expires-in 1d")
    printed = capsys.readouterr().out
    key = next(w.split("=", 1)[1] for w in printed.split() if w.startswith("ASYNCNB_KEY="))
    assert key.startswith("ank_")
    assert f"curl -s -X POST {gateway.url}/shared" in printed
    assert '-H "Authorization: Bearer $ASYNCNB_KEY"' in printed
    with gateway.client(key) as bob:
        answer = bob.post("/shared", json={"x": 0.5})
        assert answer.status_code == 202, answer.text
        assert bob.post("/scorer", json={"x": 0.5}).status_code in (403, 404)
    shell.run_line_magic("async_api", "keys shared")
    listed = capsys.readouterr().out
    key_id = key.split("_")[1]
    assert key_id in listed and "bob" in listed and key not in listed
    shell.run_line_magic("async_api", f"revoke {key_id}")
    assert f"revoked key {key_id} of bob" in capsys.readouterr().out
    with gateway.client(key) as bob:
        assert bob.post("/shared", json={"x": 0.5}).status_code == 401


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("share shared", "--to PERSON"),
        ("share shared --to 'b o b'", "invalid key name"),
        ("share shared --to bob --expires-in soon", "use seconds"),
        ("share shared --to bob --scope admin", "invalid choice"),
        ("share shared --to bob --colour red", "unrecognized arguments"),
        ("share nowhere --to bob", "nowhere"),
        ("revoke", "revoke KEY_ID"),
        ("revoke 0123456789abcdef", "no API key"),
    ],
)
def test_share_refusals_are_usage_errors(shell: InteractiveShell, line: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        shell.run_line_magic("async_api", line)
