"""End to end in a real browser: JupyterLab + headless Chromium, Run All Cells, live widgets.

Screenshots go to `test-artifacts/browser-<test>.png` (git-ignored); on failure, also
`browser-<test>-failure.png` and `.txt` with the page text.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from ..support.browser import (
    REPO,
    JupyterLab,
    failure_artifacts,
    launch_chromium,
    open_notebook,
    run_all_cells,
    screenshot,
    wait_for_all_cells_run,
    wait_for_text,
    write_notebook,
)

QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
DASHBOARD = ".asyncnb-dashboard"
DASHBOARD_COUNTS = f"{DASHBOARD} .asyncnb-counts"
DETAILS = f"{DASHBOARD} .asyncnb-details"
# what Vega draws the plot's marks into (svg here; canvas with Vega's other renderer)
PLOT_MARKS = f"{DASHBOARD} .asyncnb-plot .vega-embed svg.marks, {DASHBOARD} .asyncnb-plot canvas"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    base = tmp_path_factory.mktemp("jupyterlab")
    storage = base / "asyncnb-storage"
    storage.mkdir()
    server = JupyterLab(base, base / "root", env={"ASYNCNB_STORAGE": str(storage)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, lab: JupyterLab) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()
        # End this test's kernel (and its Dask workers) before the next test starts its own.
        lab.shutdown_sessions()


WIDGET_CELLS = [
    # A stand-in for the dashboard: counts in an HTML widget, and a button the test clicks.
    "import time\n"
    "import ipywidgets as w\n"
    "\n"
    "def show(n):\n"
    "    counts.n = n\n"
    "    counts.value = f'<div class=\"asyncnb-counts\">completed {n}</div>'\n"
    "\n"
    "counts = w.HTML()\n"
    "show(0)\n"
    "button = w.Button(description='one more')\n"
    "button.on_click(lambda _: show(counts.n + 1))\n"
    "box = w.VBox([counts, button])\n"
    "box.add_class('asyncnb-dashboard')\n"
    "display(box)",
    # A later cell updates the widget that an earlier cell displayed.
    "time.sleep(1)\nshow(5)",
]


def test_widget_notebook(lab: JupyterLab, page: Page) -> None:
    """The harness on a notebook of its own: a widget that a later cell, then a click, update."""
    notebook = "widget_check.ipynb"
    write_notebook(lab.root_dir / notebook, WIDGET_CELLS)
    with failure_artifacts(page, lab, "widget_notebook"):
        open_notebook(page, lab, notebook, workspace="widget_notebook")
        run_all_cells(page)
        wait_for_text(page, DASHBOARD_COUNTS, r"^completed 5$", timeout=60)
        wait_for_all_cells_run(page, lab, notebook, timeout=30)
        # Browser -> kernel -> browser: the click runs the callback, the view shows its update.
        page.locator(DASHBOARD).get_by_role("button", name="one more").click()
        wait_for_text(page, DASHBOARD_COUNTS, r"^completed 6$", timeout=30)
    assert screenshot(page, "widget_notebook", focus=DASHBOARD).stat().st_size > 0


def test_quickstart_notebook(lab: JupyterLab, page: Page) -> None:
    """notebooks/quickstart.ipynb, run in JupyterLab: its live dashboard counts completions."""
    assert QUICKSTART.exists(), f"{QUICKSTART} is missing"
    # A copy of the notebooks folder, so that running it never touches the repository's copy.
    shutil.copytree(
        QUICKSTART.parent,
        lab.root_dir / "notebooks",
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    notebook = "notebooks/quickstart.ipynb"
    with failure_artifacts(page, lab, "quickstart_notebook"):
        open_notebook(page, lab, notebook, workspace="quickstart_notebook")
        run_all_cells(page)
        wait_for_text(
            page,
            DASHBOARD_COUNTS,
            r"completed\W*(\d+)",
            timeout=180,
            accept=lambda m: int(m.group(1)) >= 3,
        )
        # ...and the rest of the notebook runs to the end without an error.
        wait_for_all_cells_run(page, lab, notebook, timeout=120)
    screenshot(page, "quickstart_notebook", focus=DASHBOARD)


DASHBOARD_CELLS = [
    # One quick workload that completes, one slow one (30 s) to cancel while it runs.
    "import time\n"
    "import asyncnb\n"
    "\n"
    "class Sleepy:\n"
    "    def predict(self, payload):\n"
    "        time.sleep(payload.get('sleep', 0))\n"
    "        return {'slept': payload.get('sleep', 0), 'echo': payload}\n"
    "\n"
    "api = asyncnb.deploy(Sleepy, 'sleepy', max_concurrency=2,\n"
    "                     example={'sleep': 0, 'text': 'from the example'})\n"
    "quick = api.submit({'sleep': 0, 'text': 'quick one'})\n"
    "quick.result(timeout=120)\n"
    "slow = api.submit({'sleep': 30})\n"
    "print(f'QUICK={quick.id} SLOW={slow.id}')",
    "api",
]


def test_dashboard_clicks(lab: JupyterLab, page: Page) -> None:
    """The live dashboard in JupyterLab: its Vega-Lite plot draws, a click on a row shows that
    workload in full, cancel ends a running one, and the try-it box submits the example."""
    notebook = "dashboard_clicks.ipynb"
    write_notebook(lab.root_dir / notebook, DASHBOARD_CELLS)
    page.set_viewport_size({"width": 1400, "height": 1500})  # the whole dashboard in view
    with failure_artifacts(page, lab, "dashboard_clicks"):
        open_notebook(page, lab, notebook, workspace="dashboard_clicks")
        run_all_cells(page)
        wait_for_all_cells_run(page, lab, notebook, timeout=180)
        ids = wait_for_text(page, ".jp-OutputArea-output", r"QUICK=(\w{32}) SLOW=(\w{32})", 30)
        quick, slow = ids.group(1), ids.group(2)
        wait_for_text(page, DASHBOARD_COUNTS, r"completed\W*1\b", timeout=60)
        page.locator(PLOT_MARKS).first.wait_for(state="visible", timeout=60_000)
        curl = page.locator(f"{DASHBOARD} .asyncnb-curl").inner_text()
        assert "from the example" in curl, curl  # the deploy's example payload

        # One click on a row: that workload in full (its result and timings).
        page.locator(f"{DASHBOARD} .asyncnb-row-select", has_text=quick[:12]).click()
        wait_for_text(page, DETAILS, r"quick one", timeout=30)
        details = page.locator(DETAILS).inner_text()
        assert quick in details and "completed" in details and "end to end" in details
        screenshot(page, "dashboard_details", focus=DASHBOARD)

        # The slow one, while it runs: cancel.
        page.locator(f"{DASHBOARD} .asyncnb-row-select", has_text=slow[:12]).click()
        wait_for_text(page, DETAILS, rf"{slow}\W+in_progress", timeout=60)
        page.locator(f"{DETAILS} .asyncnb-cancel").click()
        wait_for_text(page, DETAILS, rf"{slow}\W+cancelled", timeout=30)
        screenshot(page, "dashboard_cancel", focus=DASHBOARD)

        # Try it: the box offers the example payload; submit shows the result.
        payload = page.locator(f"{DASHBOARD} .asyncnb-try-payload textarea")
        assert "from the example" in payload.input_value()
        page.locator(f"{DASHBOARD} .asyncnb-try-submit").click()
        outcome = f"{DASHBOARD} .asyncnb-try-outcome"
        wait_for_text(page, outcome, re.compile(r"completed.*from the example", re.S), 60)
    screenshot(page, "dashboard_try_it", focus=DASHBOARD)
