"""The Python client: the same HTTP API a colleague calls, wrapped for notebooks and scripts.

`Client` talks to one gateway; `AsyncAPI` is a deployed API, `Workload` one submitted
workload, `SharedKey` a key made for a colleague.
"""

from .core import APISnapshot, AsyncAPI, Client, Workload, handles, set_dashboard_factory
from .pickling import pickle_predictor
from .sharing import SharedKey
from .text import checked_api_name, describe_api, explain_detail

__all__ = [
    "APISnapshot",
    "AsyncAPI",
    "Client",
    "SharedKey",
    "Workload",
    "checked_api_name",
    "describe_api",
    "explain_detail",
    "handles",
    "pickle_predictor",
    "set_dashboard_factory",
]
