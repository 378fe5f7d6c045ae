"""The local gateway of a storage, with real processes: shared by every process on the storage,
out of reach of a kernel interrupt and of Ctrl-C in a terminal, and stopped cleanly."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncnb.server.local import alive, read_runtime_file, runtime_file, write_runtime_file

from ..support.processes import BIN, Gateway, stop_local_gateway

# no main guard: a script like the README's, which multiprocessing's spawn would re-import
DEPLOYS = textwrap.dedent(
    """
    import asyncnb

    class Doubler:
        def predict(self, payload):
            return {"double": payload["x"] * 2}

    api = asyncnb.deploy(Doubler, "doubler")
    done = [w.result(timeout=60) for w in api.submit_many([{"x": 1}, {"x": 2}], progress=False)]
    assert done == [{"double": 2}, {"double": 4}], done
    print("A-OK", api.url)
    """
)
SEES = textwrap.dedent(
    """
    import asyncnb

    class Negator:
        def predict(self, payload):
            return -payload["x"]

    api = asyncnb.api("doubler")
    print("B-OK", api.url, api.submit({"x": 21}).result(timeout=60))
    asyncnb.deploy(Negator, "negator")
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's home of its own (this process's too, for the runtime files); whatever local
    gateway starts on its storage is stopped."""
    monkeypatch.setenv("HOME", str(tmp_path))
    yield tmp_path
    stop_local_gateway(tmp_path / ".asyncnb" / "storage")


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCNB_")}
    env["HOME"] = str(home)
    return env


def script(home: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    path = home / name
    path.write_text(text)
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=user_env(home),
        cwd=home,
    )


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "asyncnb"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=user_env(home),
    )


def test_processes_on_one_storage_share_one_gateway_started_on_demand(home: Path) -> None:
    first = script(home, "a.py", DEPLOYS)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "A-OK http://127.0.0.1:" in first.stdout and "Traceback" not in first.stderr
    storage = home / ".asyncnb" / "storage"
    record = read_runtime_file(str(storage))
    assert record is not None and alive(record.pid) and record.token
    assert stat.S_IMODE(runtime_file(str(storage)).stat().st_mode) == 0o600
    assert not list(storage.glob("*gateway*"))  # the token is never inside the storage
    # the gateway outlives the script that started it, in a session of its own
    assert os.getsid(record.pid) == record.pid
    second = script(home, "b.py", SEES)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"B-OK {record.url}/doubler {{'double': 42}}" in second.stdout
    listed = cli(home, "get")  # a third process: the CLI sees what both scripts deployed
    assert listed.returncode == 0, listed.stderr
    assert "doubler" in listed.stdout and "negator" in listed.stdout
    status = cli(home, "local", "status")
    assert status.returncode == 0 and f"(pid {record.pid})" in status.stdout
    assert "2 APIs (doubler, negator)" in status.stdout
    stopped = cli(home, "local", "stop")
    assert stopped.returncode == 0 and f"pid {record.pid}" in stopped.stdout
    assert not alive(record.pid) and read_runtime_file(str(storage)) is None
    assert cli(home, "local", "status").returncode == 1
    # accepted work and deployed APIs are durable: the next process starts it again
    again = script(home, "b.py", SEES)
    assert again.returncode == 0 and "{'double': 42}" in again.stdout, again.stderr[-3000:]


def test_a_stale_runtime_file_is_replaced(home: Path) -> None:
    storage = home / ".asyncnb" / "storage"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from asyncnb.server.local import RuntimeRecord

    write_runtime_file(
        RuntimeRecord(url="http://127.0.0.1:9", pid=dead.pid, storage=f"file://{storage}")
    )
    done = script(home, "a.py", DEPLOYS)
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_runtime_file(str(storage))
    assert record is not None and record.pid != dead.pid and alive(record.pid)


def test_a_kernel_interrupt_leaves_the_api_running(home: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    env = user_env(home)
    manager, kernel = start_new_kernel(kernel_name="python3", env=env, cwd=str(home))
    try:
        run_cell(kernel, DEPLOYS.replace('print("A-OK", api.url)', ""))
        sleeping = kernel.execute("import time; time.sleep(60)")
        time.sleep(1.5)
        manager.interrupt_kernel()  # SIGINT to the kernel's whole process group
        reply = kernel.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == sleeping
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        out = run_cell(
            kernel,
            "print('after', api.submit({'x': 5}).result(timeout=60), api.status()['workers'])",
        )
        assert "after {'double': 10}" in out and not out.strip().endswith(" 0")
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(kernel: object, code: str, timeout: float = 120) -> str:
    """Run `code` in the kernel; its printed output (fails on an error)."""
    output: list[str] = []

    def collect(message: dict[str, object]) -> None:
        content = message["content"]
        assert isinstance(content, dict)
        if message["msg_type"] == "stream":
            output.append(str(content["text"]))
        elif message["msg_type"] == "error":
            output.append("\n".join(content["traceback"]))  # type: ignore[arg-type]

    reply = kernel.execute_interactive(code, timeout=timeout, output_hook=collect)  # type: ignore[attr-defined]
    assert reply["content"]["status"] == "ok", "".join(output)
    return "".join(output)


# Ctrl-C, SIGTERM and startup failures ---------------------------------------------------------
def in_a_terminal(argv: list[str], ready: bytes, env: dict[str, str]) -> tuple[str, int]:
    """Run `argv` in a real pseudo-terminal, press Ctrl-C once `ready` shows; (output, exit)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a process group of its own, in the foreground of the terminal
        # with the signals a fresh terminal gives (a CI runner may start us with SIGINT ignored)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        os.execve(argv[0], argv, env)
    output = b""
    deadline = time.monotonic() + 120
    while ready not in output and time.monotonic() < deadline:
        output += _read(fd, 0.5)
    assert ready in output, output.decode(errors="replace")
    time.sleep(0.5)
    os.write(fd, b"\x03")  # what the terminal turns into SIGINT for the foreground group
    status = None
    deadline = time.monotonic() + 90
    while status is None and time.monotonic() < deadline:
        output += _read(fd, 0.2)
        done, code = os.waitpid(pid, os.WNOHANG)
        status = code if done else None
    if status is None:  # say where it hangs before it goes
        output += f"\n[still running after 90 s: {_tree(pid)}]".encode()
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    output += _read(fd, 0.2)
    os.close(fd)
    return output.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def _tree(pid: int) -> str:
    import psutil

    try:
        parent = psutil.Process(pid)
        return "; ".join(
            f"{p.pid} {p.status()} {' '.join(p.cmdline())[:120]}"
            for p in [parent, *parent.children(recursive=True)]
        )
    except psutil.Error as exc:
        return str(exc)


def _read(fd: int, timeout: float) -> bytes:
    readable, _, _ = select.select([fd], [], [], timeout)
    if not readable:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def test_ctrl_c_stops_asyncnb_serve_in_one_line(home: Path) -> None:
    tmp_path = home
    argv = [str(BIN / "asyncnb"), "serve", "--port", "0", "--storage", str(tmp_path / "s")]
    output, code = in_a_terminal(argv, b"ready at", user_env(tmp_path))
    assert code == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    after_ready = output.split("ready at", 1)[1].strip().splitlines()
    assert after_ready[-1].strip().endswith("asyncnb gateway stopped (SIGINT)"), output
    assert len(after_ready) <= 2, output  # the ready line's tail, then one line
    assert read_runtime_file(str(tmp_path / "s")) is None


def test_ctrl_c_stops_the_demo_and_the_gateway_it_started(home: Path) -> None:
    tmp_path = home
    storage = tmp_path / "demo"
    argv = [sys.executable, "-m", "asyncnb.demo", "--port", "0", "--storage", str(storage)]
    output, code = in_a_terminal(argv, b"serving until Ctrl-C", user_env(tmp_path))
    assert code == 130, output + _gateway_logs(tmp_path)
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert (
        output.strip().splitlines()[-1].endswith("stopped the local gateway the demo had started")
    )
    assert read_runtime_file(str(storage)) is None


def test_sigterm_stops_asyncnb_serve_with_exit_0(tmp_path: Path) -> None:
    gateway = Gateway("--storage", str(tmp_path / "s"), "--workers", "1").start()
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(60) == 0
    gateway.stop()


def test_a_gateway_that_cannot_start_says_why_in_one_line(home: Path) -> None:
    tmp_path = home
    storage = tmp_path / "busy"
    running = Gateway("--storage", str(storage), "--workers", "1").start()
    try:
        port = int(running.url.rsplit(":", 1)[1])
        taken = cli(tmp_path, "serve", "--port", str(port), "--storage", str(tmp_path / "other"))
        assert_one_line(taken, f"cannot listen on 127.0.0.1:{port}")
        held = cli(tmp_path, "serve", "--port", "0", "--storage", str(storage))
        assert running.proc is not None
        assert_one_line(
            held, f"already served by the gateway at {running.url} (pid {running.proc.pid})"
        )
    finally:
        running.stop()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
    env = {**user_env(tmp_path), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    unreachable = subprocess.run(
        [
            str(BIN / "asyncnb"),
            "serve",
            "--port",
            "0",
            "--scheduler",
            nobody,
            "--storage",
            str(storage),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert_one_line(unreachable, "cannot start Dask")
    no_s3 = cli(
        tmp_path,
        "serve",
        "--port",
        "0",
        "--workers",
        "1",
        "--storage",
        "s3://bucket/prefix",
        "--storage-options",
        '{"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}',
    )
    assert_one_line(no_s3, "cannot read the storage s3://bucket/prefix")


def _gateway_logs(home: Path) -> str:
    logs = sorted((home / ".asyncnb" / "run").glob("*.log"))
    return "".join(f"\n--- {log}\n{log.read_text()[-4000:]}" for log in logs)


def assert_one_line(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert text in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_runtime_file_names_what_a_client_needs(home: Path) -> None:
    done = script(home, "a.py", DEPLOYS)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(runtime_file(str(home / ".asyncnb" / "storage")).read_text())
    assert {"url", "pid", "storage", "token", "idle_timeout_s"} <= set(data)
    assert data["idle_timeout_s"] == 1800
