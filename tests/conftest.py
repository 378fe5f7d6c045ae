from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncnb.client import Client

from .support.processes import Gateway


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
