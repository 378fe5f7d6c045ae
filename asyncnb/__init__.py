"""asyncnb: turn a notebook predictor class into an asynchronous inference API on Dask."""

from __future__ import annotations

from typing import Any

from .errors import (
    AsyncNBError,
    GatewayError,
    GatewayUnreachable,
    UsageError,
    WorkloadCancelled,
    WorkloadFailed,
)
from .progress import report_progress

__version__ = "0.1.0"

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
    from .notebook_api import record as record_value

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
    from .magics import AsyncAPIMagics

    ipython.register_magics(AsyncAPIMagics)


def start_gateway(**settings: Any) -> Any:
    """Start the embedded gateway with settings (workers, worker_resources, storage, port)."""
    from .embedded import start_gateway as start

    return start(**settings)


def __getattr__(name: str) -> Any:
    # The client pulls in httpx and cloudpickle; workers importing `report_progress` need neither.
    if name in ("Client", "AsyncAPI", "Workload"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
