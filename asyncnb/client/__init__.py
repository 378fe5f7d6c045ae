"""The Python client: the same HTTP API a colleague calls, wrapped for notebooks and scripts.

`Client` talks to one gateway; `AsyncAPI` is a deployed API, `Workload` one submitted
workload, `SharedKey` a key made for a colleague. A workload's events (`Workload.stream`,
`outputs`, their async forms `astream`, `aoutputs`) are read by `events`.
"""

from .core import APISnapshot, AsyncAPI, Client, Workload, handles, set_dashboard_factory
from .events import (
    EventStreamLost,
    FreshOutputs,
    ServerSentEvent,
    describe_output,
    describe_progress,
    parse_sse,
)
from .pickling import pickle_predictor
from .sharing import SharedKey
from .text import checked_api_name, describe_api, explain_detail

__all__ = [
    "APISnapshot",
    "AsyncAPI",
    "Client",
    "EventStreamLost",
    "FreshOutputs",
    "ServerSentEvent",
    "SharedKey",
    "Workload",
    "checked_api_name",
    "describe_api",
    "describe_output",
    "describe_progress",
    "explain_detail",
    "handles",
    "parse_sse",
    "pickle_predictor",
    "set_dashboard_factory",
]
