"""asyncnb: turn a notebook predictor class into an asynchronous inference API on Dask.

This module is the facade: it names what users call and imports each part only when it is
called, so that a Dask worker importing `report_progress` loads neither the client nor the
gateway. The layers themselves live in subpackages (docs/architecture.md).
"""

from __future__ import annotations

import sys
from typing import Any

from .contract.version import __version__
from .errors import (
    AsyncNBError,
    GatewayError,
    GatewayUnreachable,
    UsageError,
    WorkloadCancelled,
    WorkloadFailed,
)
from .runtime.progress import report_progress
from .runtime.streaming import emit

__all__ = [
    "AsyncAPI",
    "AsyncNBError",
    "Client",
    "GatewayError",
    "GatewayUnreachable",
    "UsageError",
    "Workload",
    "WorkloadCancelled",
    "WorkloadFailed",
    "__version__",
    "api",
    "deploy",
    "deploy_notebook",
    "emit",
    "record",
    "report_progress",
    "start_gateway",
]


def deploy(cls: type, name: str, config: dict[str, Any] | None = None, **options: Any) -> Any:
    """Deploy `cls` as API `name` to ASYNCNB_GATEWAY, or to this process's embedded gateway."""
    from .client import Client

    return Client().deploy(cls, name, config, **options)


def deploy_notebook(path: Any, name: str, **options: Any) -> Any:
    """Deploy a notebook file as API `name`: every workload runs it with papermill."""
    from .client import Client

    return Client().deploy_notebook(path, name, **options)


def record(name: str, value: Any) -> None:
    """Inside a notebook API: record `value` as part of the workload's result."""
    from .runtime.notebook_api import record as record_value

    record_value(name, value)


def api(name: str) -> Any:
    """The handle of an API: one deployed from this process, else one on ASYNCNB_GATEWAY."""
    from .client import Client, handles

    found = handles.get(name)
    if found is not None:
        return found
    return Client().api(name)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext asyncnb`: registers the `%%async_api` magics."""
    from .ipython.magics import AsyncAPIMagics

    ipython.register_magics(AsyncAPIMagics)


def start_gateway(**settings: Any) -> Any:
    """Start the embedded gateway with settings (workers, worker_resources, storage, port)."""
    from .server.embedded import start_gateway as start

    return start(**settings)


def __getattr__(name: str) -> Any:
    # The client pulls in httpx and cloudpickle; workers importing `report_progress` need neither.
    if name in ("Client", "AsyncAPI", "Workload"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


if _in_ipython():
    # Inside IPython (a Jupyter kernel), API handles display as their live dashboard.
    from . import ipython as _notebook_side  # noqa: F401
