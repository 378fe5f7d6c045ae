from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncnb.client import Client

from .support.processes import Gateway

# A local gateway that a test's process starts on demand (a notebook, a script) and that the
# test does not stop itself ends by itself after this long without work.
os.environ.setdefault("ASYNCNB_LOCAL_IDLE_TIMEOUT", "300")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with two worker processes on local-disk storage, shared by a test module."""
    storage = tmp_path_factory.mktemp("storage")
    gw = Gateway("--storage", str(storage), "--workers", "2", "--webhook-backoff", "0.1").start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.url) as c:
        yield c


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def _no_stale_runtime_files() -> Iterator[None]:
    """Gateways killed on purpose (kill -9) leave their runtime files; remove them at the end,
    as the next client of their storage would."""
    yield
    from asyncnb.server.local import RuntimeRecord, alive

    for path in (Path.home() / ".asyncnb" / "run").glob("gateway-*.json"):
        try:
            record = RuntimeRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if not alive(record.pid):
            path.unlink(missing_ok=True)
            path.with_suffix(".lock").unlink(missing_ok=True)
