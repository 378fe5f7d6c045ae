"""Real JupyterLab + headless Chromium (Playwright) for the end-to-end browser tests.

`JupyterLab` runs `jupyter lab` as a real subprocess on a loopback port chosen by the server
itself (port 0; the port is read back from the server's runtime file), with an isolated HOME,
config, data and runtime directory, and a random token.  Every process it starts, down to the
kernel's Dask workers, carries a unique marker in its environment so that teardown can find and
end exactly those processes (kernels run in their own sessions, so the server's process group
does not reach them).

The page helpers drive JupyterLab through its UI: open a notebook, wait for its kernel, Run ->
Run All Cells from the menu bar, wait for text in the output, and save screenshots and the page
text under `test-artifacts/`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import nbformat
from playwright.sync_api import Browser, Error, Page, Playwright

from .processes import stop_local_gateway

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARKER_VAR = "ASYNCNB_BROWSER_TEST_MARKER"
# JupyterLab renders a cell's error as stderr text; IPython's traceback header tells it apart
# from other stderr output (warnings, logged tracebacks: those say "Traceback (...):").
STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
IPYTHON_TRACEBACK = re.compile(r"^-{10,}\n\S+\s+Traceback \(most recent call last\)$", re.M)


# Scroll the nearest scrolling ancestor only if the element is not already wholly visible in it.
SCROLL_INTO_VIEW = """el => {
    let box = el.parentElement;
    while (box && !(box.scrollHeight > box.clientHeight
                    && /auto|scroll/.test(getComputedStyle(box).overflowY))) {
        box = box.parentElement;
    }
    const view = box ? box.getBoundingClientRect() : {top: 0, bottom: window.innerHeight};
    const r = el.getBoundingClientRect();
    if (r.top < view.top || r.bottom > view.bottom) el.scrollIntoView({block: 'start'});
}"""


class JupyterLab:
    """`jupyter lab` as a real process on 127.0.0.1, with everything under `base`."""

    def __init__(self, base: Path, root_dir: Path, env: dict[str, str] | None = None):
        self.base = base
        self.root_dir = root_dir
        self.token = secrets.token_hex(24)
        self.marker = secrets.token_hex(12)
        self.extra_env = env or {}
        self.log_path = base / "jupyter-lab.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> JupyterLab:
        home = self.base / "home"
        runtime = self.base / "runtime"
        for d in (home, runtime, self.base / "config", self.base / "data", self.root_dir):
            d.mkdir(parents=True, exist_ok=True)
        # No "get notified about Jupyter news?" toast over the page, and no update checks.
        settings = self.base / "config" / "lab" / "user-settings" / "@jupyterlab"
        notification = settings / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {
            **os.environ,
            "HOME": str(home),
            "IPYTHONDIR": str(home / ".ipython"),
            "JUPYTER_CONFIG_DIR": str(self.base / "config"),
            "JUPYTER_DATA_DIR": str(self.base / "data"),
            "JUPYTER_RUNTIME_DIR": str(runtime),
            # sys.prefix/share/jupyter (kernelspec, @jupyter-widgets labextension) stays
            # discoverable: jupyter_core always lists the environment's own share/jupyter.
            "JUPYTER_PLATFORM_DIRS": "0",
            "JUPYTER_TOKEN": self.token,  # IdentityProvider.token; ServerApp.token is deprecated
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            MARKER_VAR: self.marker,
            **self.extra_env,
        }
        for var in ("JUPYTER_PORT", "JUPYTER_TOKEN_FILE", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):
            env.pop(var, None)
        cmd = [
            str(BIN / "jupyter"),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
        ]
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready(runtime, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, runtime: Path, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}\n{self.log()}")
            if not self.port:
                # The server writes jpserver-<pid>.json once it has bound its (random) port.
                for info_file in runtime.glob("jpserver-*.json"):
                    try:
                        info = json.loads(info_file.read_text())
                    except (OSError, ValueError):
                        continue  # being written
                    if info.get("pid") == self.proc.pid and info.get("port"):
                        self.port = int(info["port"])
                        self.url = f"http://127.0.0.1:{self.port}"
            if self.port:
                try:
                    if self.api("GET", "/api/status").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"jupyter lab not ready after {timeout}s\n{self.log()}")

    def stop(self) -> None:
        """Shut kernels down politely, then end the server's process group and any stragglers."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None and self.port:
            try:
                for kernel in self.api("GET", "/api/kernels").json():
                    self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=20)
            except (httpx.HTTPError, ValueError):
                pass
        storage = self.extra_env.get("ASYNCNB_STORAGE")
        if storage:  # the kernels' local gateway, politely (the sweep below is the fallback)
            stop_local_gateway(storage, home=self.base / "home")
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _signal_group(proc.pid, signal.SIGKILL)
        # Kernels run in sessions of their own, and Dask workers can outlive their parent.
        deadline = time.monotonic() + 10
        while (pids := _pids_with_marker(MARKER_VAR, self.marker)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        self.proc = None

    # -- REST ------------------------------------------------------------------------------

    def api(self, method: str, path: str, timeout: float = 10, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=timeout, **kwargs)

    def kernel_state(self, notebook: str) -> str | None:
        """The execution state of the kernel of the session for `notebook`, if there is one."""
        for session in self.api("GET", "/api/sessions").json():
            if session.get("path") == notebook and session.get("kernel"):
                return str(session["kernel"].get("execution_state"))
        return None

    def shutdown_sessions(self) -> None:
        """Shut down every notebook session's kernel (its Dask workers go with it)."""
        try:
            for session in self.api("GET", "/api/sessions").json():
                self.api("DELETE", f"/api/sessions/{session['id']}", timeout=20)
        except (httpx.HTTPError, ValueError):
            pass  # the server is gone: stop() ends whatever is left

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def notebook_url(self, notebook: str, workspace: str) -> str:
        # A workspace of its own per test, so one test's open tabs are not restored in the next.
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pids_with_marker(var: str, value: str) -> list[int]:
    needle = f"{var}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


# -- browser -------------------------------------------------------------------------------


def launch_chromium(playwright: Playwright) -> Browser:
    # Playwright's own browser download is not used: the system Chromium is.
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def artifact_path(name: str, suffix: str = ".png") -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"browser-{name}{suffix}"


def save_failure_artifacts(page: Page, name: str) -> str:
    """Screenshot and page text for a failed test; returns the text (for the error message)."""
    try:
        page.screenshot(path=artifact_path(f"{name}-failure"))
    except Error:
        pass
    try:
        text = page.locator("body").inner_text(timeout=5000)
    except Error as exc:
        text = f"<page text unavailable: {exc}>"
    artifact_path(f"{name}-failure", ".txt").write_text(text)
    return text


def dismiss_dialogs(page: Page) -> None:
    """Answer any modal dialog: a kernel choice gets Python 3, anything else its default."""
    dialog = page.locator(".jp-Dialog")
    if not dialog.count():
        return
    # Shown with the test's captured output if it fails (a "kernel died" dialog, say).
    print("dismissing dialog:", " | ".join(dialog.first.inner_text().split("\n")))
    select = dialog.locator("select")
    if select.count():
        options = [o.strip() for o in select.first.locator("option").all_inner_texts()]
        python = next((o for o in options if o.startswith("Python 3")), None)
        if python:
            select.first.select_option(label=python)
    accept = dialog.locator("button.jp-mod-accept")
    if accept.count():
        accept.first.click()
    else:
        page.keyboard.press("Escape")


def open_notebook(
    page: Page, lab: JupyterLab, notebook: str, workspace: str, timeout: float = 120
) -> None:
    """Open `notebook` in JupyterLab and wait until its kernel is idle."""
    page.goto(lab.notebook_url(notebook, workspace), wait_until="domcontentloaded")
    panel = page.locator(".jp-NotebookPanel:visible")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dismiss_dialogs(page)
        if panel.count() and lab.kernel_state(notebook) == "idle":
            # The UI agrees: the notebook toolbar's kernel indicator says idle.
            indicator = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            if indicator.count():
                return
        page.wait_for_timeout(250)
    raise TimeoutError(f"{notebook}: kernel not idle after {timeout}s")


def run_all_cells(page: Page) -> None:
    """Run -> Run All Cells, from the menu bar, on the current notebook."""
    # The menu acts on the current widget: make sure that is the notebook (its tab).
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    item = page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel")
    item.filter(has_text=re.compile(r"^Run All Cells$")).click()


def raise_on_cell_error(page: Page, context: str) -> None:
    """Raise if any cell of the page shows an exception's traceback."""
    errors = [
        t for t in page.locator(STDERR_OUTPUT).all_text_contents() if IPYTHON_TRACEBACK.search(t)
    ]
    if errors:
        raise AssertionError(f"{context}: a cell raised:\n" + "\n".join(errors))


def wait_for_all_cells_run(page: Page, lab: JupyterLab, notebook: str, timeout: float) -> None:
    """Wait until every code cell shows an execution count (`[n]:`) and the kernel is idle.

    Raises at once if a cell shows an error or the run stops early, and `TimeoutError` after
    `timeout` seconds.
    """
    prompts = page.locator(".jp-NotebookPanel:visible .jp-CodeCell .jp-InputArea-prompt")
    deadline = time.monotonic() + timeout
    texts: list[str] = []
    while True:
        raise_on_cell_error(page, notebook)
        texts = [t.strip() for t in prompts.all_text_contents()]
        done = [bool(re.fullmatch(r"\[\d+\]:", t)) for t in texts]
        if texts and "[*]:" not in texts and lab.kernel_state(notebook) == "idle":
            if all(done):
                return
            # Nothing queued, kernel idle, cells left unrun: Run All stopped (on an error).
            raise AssertionError(f"{notebook}: run stopped before the end: {texts}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{notebook}: cells not all run after {timeout}s: {texts}")
        dismiss_dialogs(page)
        page.wait_for_timeout(250)


def wait_for_text(
    page: Page,
    selector: str,
    regex: str | re.Pattern[str],
    timeout: float,
    accept: Callable[[re.Match[str]], bool] | None = None,
    fail_on_error: bool = True,
) -> re.Match[str]:
    """Wait until the text of an element matching `selector` matches `regex` (and `accept`).

    Returns the match.  Raises at once if a cell shows an error (unless `fail_on_error` is
    false), and `TimeoutError` after `timeout` seconds, with the last text seen.
    """
    pattern = re.compile(regex)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        seen = [t for t in page.locator(selector).all_text_contents() if t]
        for text in seen:
            match = pattern.search(text)
            if match and (accept is None or accept(match)):
                return match
        if fail_on_error:
            raise_on_cell_error(page, f"waiting for {selector!r}")
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{selector!r} did not match {pattern.pattern!r} within {timeout}s; "
                f"last text: {seen!r}"
            )
        dismiss_dialogs(page)
        page.wait_for_timeout(250)


@contextmanager
def failure_artifacts(page: Page, lab: JupyterLab, name: str) -> Iterator[None]:
    """On an exception inside, save `browser-<name>-failure.{png,txt}` and re-raise it with the
    page text and the server log attached."""
    try:
        yield
    except Exception as exc:
        text = save_failure_artifacts(page, name)
        raise AssertionError(
            f"{exc}\n--- page text ---\n{text[-4000:]}\n--- jupyter lab log ---\n{lab.log()}"
        ) from exc


def screenshot(page: Page, name: str, focus: str | None = None) -> Path:
    """Save `test-artifacts/browser-<name>.png`, with the last `focus` match fully in view if
    it fits, else scrolled to the top of the view."""
    if focus:
        page.locator(focus).last.evaluate(SCROLL_INTO_VIEW)
        page.wait_for_timeout(300)
    path = artifact_path(name)
    page.screenshot(path=path)
    return path


# -- notebooks -----------------------------------------------------------------------------


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of code cells with the stock Python 3 kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    return path
