"""asyncnb.deploy without ASYNCNB_GATEWAY uses the local gateway of the storage (starting it);
`make demo` runs the example on it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..support.processes import stop_local_gateway

SCRIPT = textwrap.dedent(
    """
    import asyncnb

    class Doubler:
        def predict(self, payload):
            asyncnb.report_progress(1.0)
            return {"double": payload["x"] * 2}

    if __name__ == "__main__":
        api = asyncnb.deploy(Doubler, "doubler")
        results = [w.result(timeout=60) for w in api.submit_many([{"x": i} for i in range(5)],
                                                                 progress=False)]
        assert results == [{"double": 2 * i} for i in range(5)], results
        again = asyncnb.api("doubler")
        assert again.url == api.url and again.status()["completed"] == 5
        print("EMBEDDED-OK", api.url)
    """
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCNB_")}
    env["HOME"] = str(home)
    return env


def test_deploy_without_gateway_uses_the_local_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # where the runtime files of the script's are
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=180,
            env=_env(tmp_path),
            cwd=tmp_path,
        )
    finally:
        stop_local_gateway(tmp_path / ".asyncnb" / "storage")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EMBEDDED-OK http://127.0.0.1:" in result.stdout
    # the default storage is a folder under the user's home
    assert (tmp_path / ".asyncnb" / "storage" / "apis" / "doubler" / "spec.json").exists()


def test_demo_runs_the_example_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asyncnb.demo", "--once", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("  completed  ") == 4
    assert "curl -s -X POST http://127.0.0.1:" in result.stdout
    assert "'sentiment': 'positive'" in result.stdout
