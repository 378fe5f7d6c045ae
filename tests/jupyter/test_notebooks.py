"""The example notebooks, run headless with papermill on small sizes (the local gateway of a
storage of each test's own, stopped after it)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import papermill
import pytest

from ..support.processes import stop_local_gateway

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SMALL = {
    "quickstart.ipynb": {"n_workloads": 4, "delay_s": 0.05},
    "batch_gpu.ipynb": {"n_items": 24, "batch_size": 8, "workers": 1},
    "long_jobs.ipynb": {"n_docs": 2, "pages": 3, "page_s": 0.1},
    "report_api.ipynb": {"region": "east", "days": 3},
}


def test_every_notebook_is_covered() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs_headless(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ASYNCNB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ASYNCNB_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("HOME", str(tmp_path))  # the local gateway's runtime files go there
    output = tmp_path / name
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(output),
            parameters=SMALL[name],
            cwd=str(tmp_path),
            kernel_name="python3",
            execution_timeout=240,
            progress_bar=False,
        )
    finally:
        stop_local_gateway(tmp_path / "storage")
    executed = nbformat.read(output, as_version=4)
    errors = [
        o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    widgets_shown = [
        o
        for c in executed.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets_shown, "the API handle displays as a live dashboard"


def test_report_notebook_records_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCNB_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("HOME", str(tmp_path))
    from asyncnb.runtime.notebook_api import _records

    try:
        executed = papermill.execute_notebook(
            str(NOTEBOOKS / "report_api.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"region": "west", "days": 2},
            kernel_name="python3",
            progress_bar=False,
        )
    finally:
        stop_local_gateway(tmp_path / "storage")
    recorded = _records(executed)
    assert recorded["region"] == "west" and len(recorded["daily"]) == 2
