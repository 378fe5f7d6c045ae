"""The `asyncnb` command line against a real gateway process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..support.processes import BIN, Gateway

PREDICTORS = str(Path(__file__).resolve().parents[1] / "support" / "predictors.py")


def run(
    *args: str,
    gateway: Gateway | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("ASYNCNB_GATEWAY", None)
    if gateway is not None:
        full_env["ASYNCNB_GATEWAY"] = gateway.url
    result = subprocess.run(
        [str(BIN / "asyncnb"), *args],
        capture_output=True,
        timeout=120,
        env=full_env,
        input=stdin,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_deploy_submit_status_cancel_get(gateway: Gateway, tmp_path: Path) -> None:
    deployed = run(
        "deploy",
        f"{PREDICTORS}:Echo",
        "--name",
        "cli-echo",
        "--config",
        '{"tag": "from-cli"}',
        "--max-concurrency",
        "2",
        gateway=gateway,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed cli-echo v1" in deployed.stdout
    gateway.wait_ready("cli-echo")

    waited = run("submit", "cli-echo", "--json", '{"a": 1}', "--wait", gateway=gateway)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["payload"] == {"a": 1}
    assert json.loads(waited.stdout)["tag"] == "from-cli"

    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    submitted = run("submit", "cli-echo", str(payload), gateway=gateway)
    workload_id = submitted.stdout.strip()
    assert len(workload_id) == 32
    status = run("status", "cli-echo", workload_id, "--gateway", gateway.url)
    assert json.loads(status.stdout)["id"] == workload_id

    piped = run(
        "submit",
        "cli-echo",
        "-",
        "--content-type",
        "text/plain",
        "--wait",
        gateway=gateway,
        stdin=b"from stdin",
    )
    assert json.loads(piped.stdout)["payload"] == "from stdin"

    listing = run("get", gateway=gateway)
    assert listing.returncode == 0 and "cli-echo" in listing.stdout
    detail = run("get", "cli-echo", gateway=gateway)
    assert workload_id in detail.stdout

    run("deploy", f"{PREDICTORS}:Sleepy", "--name", "cli-slow", gateway=gateway)
    gateway.wait_ready("cli-slow")
    ids = [
        run("submit", "cli-slow", "--json", '{"sleep": 4}', gateway=gateway).stdout.strip()
        for _ in range(3)
    ]
    cancelled = run("cancel", "cli-slow", ids[-1], gateway=gateway)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert_one_line_error(run("cancel", "cli-slow", ids[-1], gateway=gateway), "409")


def test_clear_one_line_errors(gateway: Gateway, tmp_path: Path) -> None:
    assert_one_line_error(run("get", "--gateway", "http://127.0.0.1:9"), "cannot reach")
    assert_one_line_error(run("submit", "nope", "--json", "{}", gateway=gateway), "not deployed")
    assert_one_line_error(run("status", "nope", "zz", gateway=gateway), "invalid workload id")
    assert_one_line_error(
        run(
            "deploy",
            f"{PREDICTORS}:Echo",
            "--name",
            "bad-opt",
            "--max-concurrency",
            "0",
            gateway=gateway,
        ),
        "max_concurrency",
    )
    assert_one_line_error(
        run("deploy", f"{PREDICTORS}:Missing", "--name", "x", gateway=gateway), "Missing"
    )
    assert_one_line_error(
        run("deploy", "nofile.py:X", "--name", "x", gateway=gateway), "no such file"
    )
    assert_one_line_error(
        run("deploy", f"{PREDICTORS}:Echo", "--name", "Bad_Name", gateway=gateway),
        "invalid API name",
    )
    assert_one_line_error(run("submit", "cli-echo", gateway=gateway), "give a payload")
    assert_one_line_error(run("submit", "cli-echo", "--json", "{bad", gateway=gateway), "Expecting")
