"""Real processes for the tests: `asyncnb serve`, `moto_server`, and a webhook receiver."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
READY = re.compile(r"ready at (http://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # Worker processes of a LocalCluster outlive a kill -9 of their parent; end them too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Gateway:
    """`asyncnb serve` as a real process on a free loopback port."""

    ready_line = READY  # the output line that says it serves (and where)

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None):
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self, timeout: float = 90) -> Gateway:
        cmd = [str(BIN / "asyncnb"), "serve", "--port", "0", *self.args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.url = self.wait_for(self.ready_line, timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"gateway did not start: {exc}") from None
        return self

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> str:
        """The first group of the first output line matching `pattern` (within `timeout`)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            match = pattern.search(line)
            if match:
                return match.group(1)
        raise RuntimeError(f"no {pattern.pattern!r} within {timeout} s:\n" + "".join(seen[-40:]))

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sink = open(self.log, "a") if self.log else None  # noqa: SIM115
        for line in self.proc.stdout:
            self._lines.put(line)
            if sink:
                sink.write(line)
                sink.flush()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        stop_group(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def wait_ready(self, api: str, token: str | None = None, timeout: float = 60) -> dict[str, Any]:
        with self.client(token) as http:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                info = http.get(f"/{api}").json()
                if info.get("state") == "ready":
                    return dict(info)
                if info.get("state") == "error":
                    raise RuntimeError(f"{api} failed: {info.get('error')}")
                time.sleep(0.1)
        raise TimeoutError(f"{api} not ready after {timeout} s")


class MotoServer:
    """A real S3 endpoint on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.endpoint, timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def s3_client(self) -> Any:
        """A boto3 S3 client of this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def make_bucket(self, name: str) -> None:
        s3 = self.s3_client()
        s3.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        s3 = self.s3_client()
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys


class WebhookReceiver:
    """A real HTTP server that records deliveries and fails the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.calls += 1
                if receiver.calls <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.append(
                    {"headers": dict(self.headers.items()), "body": body, "json": json.loads(body)}
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, f"got {len(self.received)} of {count} webhooks"


def stop_local_gateway(storage: Path | str, home: Path | None = None) -> None:
    """Stop the local gateway that some process started on demand for `storage`, if any;
    `home`: the HOME of the processes that started it (where its runtime file is)."""
    from asyncnb.server.local import stop_local_gateway as stop

    saved = os.environ.get("HOME")
    if home is not None:
        os.environ["HOME"] = str(home)
    try:
        stop(str(storage))
    finally:
        if saved is not None:
            os.environ["HOME"] = saved
