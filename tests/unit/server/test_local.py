"""The local gateway's runtime file and its helpers (the processes are tests/system's)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from asyncnb.contract.settings import GatewaySettings
from asyncnb.errors import UsageError
from asyncnb.server.local import (
    LOCAL_IDLE_TIMEOUT_S,
    RuntimeRecord,
    _reason,
    find_local_gateway,
    idle_timeout_from_env,
    is_gateway,
    read_runtime_file,
    remove_runtime_file,
    runtime_file,
    shape_of,
    stop_local_gateway,
    write_runtime_file,
)


def record(storage: Path, pid: int | None = None) -> RuntimeRecord:
    return RuntimeRecord(
        url="http://127.0.0.1:1234",
        pid=pid or os.getpid(),
        storage=f"file://{storage}",
        token="user",
        admin_token="admin",
    )


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_the_runtime_file_is_readable_by_its_user_only_and_outside_the_storage(
    tmp_path: Path,
) -> None:
    path = write_runtime_file(record(tmp_path))
    run = tmp_path / "home" / ".asyncnb" / "run"
    assert path.parent == run and path == runtime_file(str(tmp_path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    found = read_runtime_file(str(tmp_path))
    assert found == record(tmp_path) and found.client_token == "admin"
    assert [p.name for p in run.iterdir()] == [path.name]  # no tmp file left behind


def test_each_storage_has_its_own() -> None:
    one, two = runtime_file("s3://bucket/a"), runtime_file("s3://bucket/b")
    assert one.parent == two.parent and one != two
    assert runtime_file("/data/x") == runtime_file("file:///data/x")


def test_only_the_gateway_named_in_the_file_removes_it(tmp_path: Path) -> None:
    write_runtime_file(record(tmp_path))
    remove_runtime_file(str(tmp_path), os.getpid() + 1)  # a newer gateway wrote it meanwhile
    assert read_runtime_file(str(tmp_path)) is not None
    remove_runtime_file(str(tmp_path), os.getpid())
    assert read_runtime_file(str(tmp_path)) is None
    remove_runtime_file(str(tmp_path), os.getpid())  # already gone: nothing to do


def test_a_broken_runtime_file_is_no_record(tmp_path: Path) -> None:
    path = write_runtime_file(record(tmp_path))
    path.write_text("{not json")
    assert read_runtime_file(str(tmp_path)) is None
    path.write_text('{"url": "x"}')
    assert read_runtime_file(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, LOCAL_IDLE_TIMEOUT_S), ("", LOCAL_IDLE_TIMEOUT_S), ("60", 60.0), ("0", None)],
)
def test_the_idle_timeout_comes_from_the_environment(
    text: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if text is None:
        monkeypatch.delenv("ASYNCNB_LOCAL_IDLE_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("ASYNCNB_LOCAL_IDLE_TIMEOUT", text)
    assert idle_timeout_from_env() == expected


def test_a_bad_idle_timeout_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCNB_LOCAL_IDLE_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="not a number"):
        idle_timeout_from_env()


def test_the_reason_of_a_failed_start_is_its_error_line(tmp_path: Path) -> None:
    log = tmp_path / "local-gateway.log"
    log.write_text("an older start\nerror: old news\n")
    offset = log.stat().st_size
    with open(log, "a") as out:
        out.write("--- 2026-12-01 asyncnb serve --port 0\n")
        out.write("2026 distributed.worker WARNING something\n")
        out.write("error: storage x is already served by the gateway at http://y (pid 7)\n")
    assert _reason(log, offset) == "storage x is already served by the gateway at http://y (pid 7)"
    with open(log, "a") as out:
        out.write("--- again\nRuntimeError: boom\n")
    assert _reason(log, log.stat().st_size - len("--- again\nRuntimeError: boom\n")) == (
        "RuntimeError: boom"
    )


def test_the_shape_is_what_start_gateway_can_ask_for() -> None:
    settings = GatewaySettings(n_workers=2, threads_per_worker=1, worker_resources={"GPU": 1})
    assert shape_of(settings) == {
        "n_workers": 2,
        "threads_per_worker": 1,
        "worker_resources": {"GPU": 1},
    }


def test_a_pid_reused_by_another_process_makes_the_file_stale(tmp_path: Path) -> None:
    """After a reboot the pid of the file may name some other process: never it is stopped,
    and the file is replaced."""
    write_runtime_file(record(tmp_path, pid=os.getpid()))  # this pytest, not a gateway
    assert not is_gateway(os.getpid())
    assert find_local_gateway(str(tmp_path)) is None
    assert read_runtime_file(str(tmp_path)) is None
    write_runtime_file(record(tmp_path, pid=os.getpid()))
    assert stop_local_gateway(str(tmp_path)) is not None  # it signals nothing
    assert read_runtime_file(str(tmp_path)) is None
