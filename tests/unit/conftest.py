"""Unit tests start no process: they run in this one, in seconds (`pytest tests/unit`)."""

from __future__ import annotations

import multiprocessing.process
import os
import platform
import subprocess
from typing import Any

import pytest

# Python asks `uname -p` once per process for the processor name, and caches it; Dask's
# in-process worker reads it. Asked here, before any test runs, it is no test's process.
platform.processor()


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a unit test started a process: it belongs in tests/system")


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
    monkeypatch.setattr(os, "fork", _refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse)
