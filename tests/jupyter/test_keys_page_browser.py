"""The owner's page at <base_url>/asyncnb/ in a real browser (headless Chromium, Playwright):
create an API key with the page's form, see it once with its curl lines, use it from outside
the browser, then revoke it with the page's button.

One `jupyter server` with the extension and its managed gateway (one Dask worker) and one API
deployed from a kernel. The page runs under a strict Content-Security-Policy (only its own
nonce'd script and style): any console error or CSP violation fails the test.

Screenshots go to `test-artifacts/browser-keys_page*.png` (git-ignored); on failure, also
`browser-<test>-failure.png` and `.txt` with the page text.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from ..support.browser import launch_chromium, save_failure_artifacts, screenshot
from ..support.jupyter import JupyterServer, Kernel, alive, wait_done

websocket = pytest.importorskip("websocket")
pytestmark = pytest.mark.timeout(600)

BASE = "/jupyter/"
API = "echo"
DEPLOY = """
import asyncnb

class Echo:
    def predict(self, payload):
        return {"echo": payload}

asyncnb.deploy(Echo, "echo", max_concurrency=2)
print("deployed")
"""
KEY = re.compile(r"ank_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
SECTION = f"section.asyncnb-api[data-api='{API}']"
# Playwright runs init scripts outside the page's CSP: this one turns every CSP violation into
# a console error, so that a blocked script, style or request cannot go unnoticed.
REPORT_CSP_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI);
});
"""


@dataclass
class Setup:
    server: JupyterServer
    # The key "bob" as the page showed it, once the first test has created it.
    created: dict[str, str] = field(default_factory=dict)

    @property
    def page_url(self) -> str:
        return f"{self.server.url}/asyncnb/"

    def as_key(self, key: str) -> httpx.Client:
        """A client with the key only (no Jupyter credentials), at the server's origin."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.server.port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            follow_redirects=False,
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("keys-page")
    server = JupyterServer(
        tmp,
        f"--AsyncNB.storage={tmp / 'storage'}",
        "--AsyncNB.n_workers=1",
        base_url=BASE,
    ).start()
    gateway_pid = None
    try:
        with server.http() as owner:
            gateway_pid = server.wait_gateway(owner)["pid"]
            kernel = Kernel.start(server, owner)
            try:
                reply, out = kernel.execute(DEPLOY, timeout=180)
                assert reply["status"] == "ok", out
            finally:
                kernel.close()
            assert owner.delete(f"/api/kernels/{kernel.id}").status_code == 204
            deadline = time.monotonic() + 120
            while owner.get(f"/asyncnb/{API}").json().get("state") != "ready":
                assert time.monotonic() < deadline, f"{API} not ready"
                time.sleep(0.2)
        yield Setup(server)
    finally:
        server.stop()
        if gateway_pid is not None and alive(gateway_pid):
            os.killpg(gateway_pid, signal.SIGKILL)


@dataclass
class Browsing:
    page: Page
    errors: list[str]


@pytest.fixture(scope="module")
def browsing(setup: Setup) -> Iterator[Browsing]:
    """One browser context for the module (its login cookie is the owner's), with every
    console error, uncaught exception and CSP violation of its page collected."""
    with sync_playwright() as playwright:
        chromium: Browser = launch_chromium(playwright)
        try:
            context = chromium.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(30_000)
            context.add_init_script(REPORT_CSP_VIOLATIONS)
            page = context.new_page()
            errors: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(f"console: {message.text} ({message.location})")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            try:
                yield Browsing(page, errors)
            finally:
                context.close()
        finally:
            chromium.close()


@contextmanager
def failure_artifacts(page: Page, server: JupyterServer, name: str) -> Iterator[None]:
    """On an exception inside, save `browser-<name>-failure.{png,txt}` and re-raise it with
    the page text and the server's log attached."""
    try:
        yield
    except Exception as exc:
        text = save_failure_artifacts(page, name)
        raise AssertionError(
            f"{exc}\n--- page text ---\n{text[-4000:]}\n--- jupyter server log ---\n"
            f"{server.log_tail(80)}"
        ) from exc


def open_page(page: Page, url: str) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, response and response.status
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'nonce-" in csp and "default-src 'none'" in csp, csp
    expect(page.locator("h1")).to_have_text("asyncnb APIs")


def test_the_owner_creates_a_key_in_the_page(setup: Setup, browsing: Browsing) -> None:
    page, server = browsing.page, setup.server
    browsing.errors.clear()  # this test's own
    with failure_artifacts(page, server, "keys_page_create"):
        # The token once in the URL: Jupyter answers with its login cookie; then none.
        open_page(page, f"{setup.page_url}?token={server.token}")
        open_page(page, setup.page_url)
        section = page.locator(SECTION)
        expect(section.locator("h2")).to_have_text(API)
        expect(section.locator(".asyncnb-no-keys")).to_be_visible()
        endpoint = f"{server.url}/asyncnb/{API}"
        expect(section.locator("pre.asyncnb-curl").first).to_contain_text(endpoint)

        form = section.locator("form.asyncnb-key-form")
        form.locator("input[name=name]").fill("bob")
        form.locator("input[name=read]").check()
        form.locator("input[name=expires]").fill("7")  # days, the form's default unit
        form.locator("input[name=rate_limit]").fill("50")
        form.get_by_role("button", name="Create key").click()

        # The new key, shown once, with ready-to-run lines.
        shown = section.locator(".asyncnb-new-key")
        expect(shown).to_be_visible()
        expect(shown.locator(".asyncnb-new-key-name")).to_have_text("bob")
        key_text = shown.locator("pre.asyncnb-new-key-text")
        expect(key_text).to_have_text(KEY)
        key = key_text.inner_text().strip()
        curl = shown.locator("pre.asyncnb-new-key-curl").inner_text()
        assert f"export ASYNCNB_KEY='{key}'" in curl, curl
        assert "Authorization: Bearer $ASYNCNB_KEY" in curl and endpoint in curl, curl
        expect(section.locator(".asyncnb-key-status")).to_have_text("")

        # Its row in the API's key table: by its public prefix only.
        key_id = key.split("_")[1]
        prefix = f"ank_{key_id}_"
        row = section.locator("tr.asyncnb-key[data-key-name='bob']")
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-key-id", key_id)
        expect(row.locator(".asyncnb-key-prefix")).to_have_text(prefix + "\u2026")
        expect(row.locator(".asyncnb-key-scopes")).to_have_text("invoke, read")
        expect(row.locator(".asyncnb-key-state")).to_have_text("active")
        expect(row.locator(".asyncnb-key-limits")).to_contain_text("50/s")
        expect(row.locator(".asyncnb-key-expires")).not_to_have_text("never")
        expect(section.locator(".asyncnb-no-keys")).to_be_hidden()
        expect(form.locator("input[name=name]")).to_have_value("")  # the form is reset
        screenshot(page, "keys_page_created", focus=".asyncnb-new-key")

        # Reloaded: the row is there (rendered by the server), the secret nowhere.
        open_page(page, setup.page_url)
        row = page.locator(f"{SECTION} tr.asyncnb-key[data-key-id='{key_id}']")
        expect(row.locator(".asyncnb-key-name")).to_have_text("bob")
        expect(row.locator(".asyncnb-key-prefix")).to_have_text(prefix + "\u2026")
        expect(page.locator(f"{SECTION} .asyncnb-new-key")).to_be_hidden()
        secret = key.removeprefix(prefix)
        assert secret not in page.content() and prefix in page.content()
        assert browsing.errors == [], browsing.errors
    setup.created.update(key=key, id=key_id)

    # The shown key, outside the browser: it calls the API, and nothing of Jupyter.
    with setup.as_key(key) as bob:
        accepted = bob.post(f"{BASE}asyncnb/{API}", json={"from": "the page"})
        assert accepted.status_code == 202, accepted.text
        record = wait_done(bob, accepted.headers["Location"])
        assert record["status"] == "completed", record
        assert record["result"] == {"echo": {"from": "the page"}}
        assert record["submitted_by"] == "bob"
        assert bob.get(f"{BASE}api/kernels").status_code == 403
        assert bob.get(f"{BASE}asyncnb/").status_code == 403


def test_the_owner_revokes_the_key_in_the_page(setup: Setup, browsing: Browsing) -> None:
    if not setup.created:
        pytest.skip("needs the key that test_the_owner_creates_a_key_in_the_page creates")
    page, server = browsing.page, setup.server
    key, key_id = setup.created["key"], setup.created["id"]
    browsing.errors.clear()  # this test's own
    # The page asks "are you sure?" (a revoke cannot be undone); the owner is.
    asked: list[str] = []

    def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)
    with failure_artifacts(page, server, "keys_page_revoke"):
        open_page(page, setup.page_url)
        section = page.locator(SECTION)
        row = section.locator(f"tr.asyncnb-key[data-key-id='{key_id}']")
        expect(row.locator(".asyncnb-key-state")).to_have_text("active")
        row.get_by_role("button", name="Revoke").click()
        expect(section.locator(".asyncnb-key-status")).to_have_text(
            "Revoked bob: it gets 401 from now on."
        )
        assert asked == ["Revoke the key of bob? It stops working at once."], asked
        # The table is listed again: the row stays, revoked, with no button left.
        expect(row.locator(".asyncnb-key-state")).to_have_text("revoked")
        expect(row.locator(".asyncnb-key-state")).to_have_class(re.compile(r"\bstate-revoked\b"))
        expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
        screenshot(page, "keys_page_revoked", focus=SECTION)
        # So does the server-rendered page.
        open_page(page, setup.page_url)
        expect(row.locator(".asyncnb-key-state")).to_have_text("revoked")
        assert key.removeprefix(f"ank_{key_id}_") not in page.content()
        assert browsing.errors == [], browsing.errors

    with setup.as_key(key) as bob:
        refused = bob.post(f"{BASE}asyncnb/{API}", json={"from": "a revoked key"})
        assert refused.status_code == 401, refused.text
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert "revoked" in refused.json()["detail"]
