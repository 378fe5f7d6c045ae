"""Whole notebooks as APIs: papermill per workload, recorded results, the stored notebook."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from asyncnb.client import Client
from asyncnb.errors import WorkloadFailed

from ..support.processes import Gateway
from ..system.test_cli import assert_one_line_error, run

REPORT = Path(__file__).resolve().parents[2] / "notebooks" / "report_api.ipynb"


@pytest.fixture(scope="module")
def report(client: Client, gateway: Gateway) -> str:
    client.deploy_notebook(REPORT, "sales-report", max_concurrency=2)
    gateway.wait_ready("sales-report")
    return "sales-report"


def test_parameters_in_records_out_notebook_kept(
    client: Client, report: str, gateway: Gateway
) -> None:
    api = client.api(report)
    workload = api.submit({"region": "south", "days": 3})
    result = workload.result(timeout=120)
    assert result["region"] == "south" and result["days"] == 3
    assert len(result["daily"]) == 3 and result["total"] == round(sum(result["daily"]), 2)
    executed = workload.notebook()
    assert b"injected-parameters" in executed and b'region = \\"south\\"' in executed
    html = workload.notebook(format="html").decode()
    assert "<html" in html and "south" in html
    assert "not deployed (running as a notebook API workload)" in executed.decode()


def test_progress_is_cells_executed(report: str, gateway: Gateway) -> None:
    with gateway.client() as http:
        workload_id = http.post(f"/{report}", json={"pause_s": 3}).json()["id"]
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = http.get(f"/{report}/{workload_id}").json()
            if info.get("progress"):
                seen.add(info["progress"]["message"])
            if info["status"] == "completed":
                break
            time.sleep(0.1)
        assert info["status"] == "completed"
        assert any(m.startswith("cell ") and "/" in m for m in seen), seen


def test_failing_cell_fails_the_workload(client: Client, report: str) -> None:
    workload = client.api(report).submit({"region": "nowhere", "fail": True})
    with pytest.raises(WorkloadFailed) as failed:
        workload.result(timeout=120)
    assert failed.value.type == "NotebookCellError"
    # the index is in the executed notebook, where papermill added the injected parameters
    assert "cell 4 raised ValueError" in failed.value.remote_message
    assert "no sales data for region 'nowhere'" in failed.value.remote_message
    assert b"no sales data" in workload.notebook()  # the failed run is kept too


def test_non_object_payload_and_cancel(client: Client, report: str, gateway: Gateway) -> None:
    with gateway.client() as http:
        text = http.post(f"/{report}", content="hello", headers={"Content-Type": "text/plain"})
        info = http.get(f"/{report}/{text.json()['id']}", headers={"Prefer": "wait=60"}).json()
        # a `payload` parameter the notebook does not declare is still injected
        assert info["status"] == "completed", info
        slow = http.post(f"/{report}", json={"pause_s": 30}).json()["id"]
        time.sleep(1)
        assert http.delete(f"/{report}/{slow}").json()["status"] == "cancelled"
        assert http.get(f"/{report}/{slow}").json()["status"] == "cancelled"
        missing = http.get(f"/{report}/{slow}/notebook")
        assert missing.status_code == 404 and "no executed notebook" in missing.json()["detail"]
        bad = http.get(f"/{report}/{text.json()['id']}/notebook", params={"format": "pdf"})
        assert bad.status_code == 422


def test_magic_and_cli_deploy_notebooks(gateway: Gateway, tmp_path: Path) -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "asyncnb")
    api = shell.run_line_magic(
        "async_api", f"deploy-notebook {REPORT} magic-report --gateway {gateway.url}"
    )
    gateway.wait_ready("magic-report")
    assert api.submit({"days": 1}).result(timeout=120)["days"] == 1

    deployed = run("deploy", str(REPORT), "--name", "cli-report", gateway=gateway)
    assert deployed.returncode == 0 and "deployed cli-report v1" in deployed.stdout
    headless = run(
        "deploy",
        str(REPORT),
        "-p",
        "region",
        "east",
        "--output",
        str(tmp_path / "ran.ipynb"),
        gateway=gateway,
    )
    assert headless.returncode == 0, headless.stderr
    assert "deployed: region-forecast v" in headless.stdout
    gateway.wait_ready("region-forecast")
    forecast = httpx.post(
        f"{gateway.url}/region-forecast",
        json={"daily": [100, 110, 120]},
        headers={"Prefer": "wait=30"},
    ).json()
    assert len(forecast["result"]["next"]) == 3
    assert_one_line_error(
        run("deploy", str(tmp_path / "nope.ipynb"), "--name", "x", gateway=gateway),
        "not a notebook file",
    )
