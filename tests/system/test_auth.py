"""Tokens: every route but /healthz needs one; deploy needs the admin token."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncnb.client import Client
from asyncnb.errors import GatewayError

from ..support import predictors
from ..support.processes import BIN, Gateway

USER, ADMIN = "user-token-123", "admin-token-456"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    log = tmp_path_factory.mktemp("log") / "gateway.log"
    gw = Gateway(
        "--storage",
        str(tmp_path_factory.mktemp("s")),
        "--workers",
        "1",
        "--token",
        USER,
        "--admin-token",
        ADMIN,
        "--log-level",
        "info",
        log=log,
    ).start()
    yield gw
    gw.stop()
    assert USER not in log.read_text() and ADMIN not in log.read_text()


def test_routes_need_tokens(secured: Gateway) -> None:
    with secured.client() as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for method, path in [
            ("GET", "/apis"),
            ("GET", "/metrics"),
            ("POST", "/x"),
            ("GET", "/x"),
            ("GET", "/openapi.json"),
            ("PUT", "/apis/x"),
            ("GET", "/x/" + "0" * 32),
            ("DELETE", "/x/" + "0" * 32),
        ]:
            response = anonymous.request(method, path)
            assert response.status_code == 401, (method, path)
            assert "token" in response.json()["detail"]
    with secured.client("wrong") as wrong:
        assert wrong.get("/apis").status_code == 403
    with secured.client(USER) as user:
        assert user.get("/apis").status_code == 200
        assert user.get("/openapi.json").json()["info"]["title"] == "asyncnb gateway"
        denied = user.put("/apis/x", json={"predictor": "eA=="})
        assert denied.status_code == 403
    with secured.client() as browser:
        assert browser.get("/docs", params={"token": USER}).status_code == 200
        assert browser.get("/docs").status_code == 401


def test_admin_deploys_user_submits(secured: Gateway) -> None:
    with Client(secured.url, token=ADMIN) as admin:
        admin.deploy(predictors.Echo, "private")
    secured.wait_ready("private", token=USER)
    with Client(secured.url, token=USER) as user:
        api = user.api("private")
        assert api.submit({"q": 1}).result(timeout=30)["payload"] == {"q": 1}
        with pytest.raises(GatewayError) as denied:
            user.deploy(predictors.Echo, "private")
        assert denied.value.status_code == 403
        status = api.status()
        assert USER not in str(status) and ADMIN not in str(status)


def test_serve_refuses_public_host_without_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "asyncnb"),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--storage",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(BIN), "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "without --token" in result.stderr and "Traceback" not in result.stderr


def test_status_polling_checks_the_token(secured: Gateway) -> None:
    with Client(secured.url, token=ADMIN) as admin:
        admin.deploy(predictors.Echo, "polled")
    secured.wait_ready("polled", token=USER)
    with secured.client(USER) as user:
        workload_id = user.post("/polled", json={}, headers={"Prefer": "wait=20"}).json()["id"]
        assert user.get(f"/polled/{workload_id}").status_code == 200
    with secured.client() as anonymous:
        assert anonymous.get(f"/polled/{workload_id}").status_code == 401
    with secured.client("wrong") as wrong:
        assert wrong.get(f"/polled/{workload_id}").status_code == 403
