"""`Workload`: the client's handle of one submitted workload.

It reaches its gateway through the API handle it came from (`AsyncAPI` in core.py, or any
object with the same `name`, `url` and `client`), so it needs nothing else of the client.
Its reads are `repeatable`: they ride out a gateway that is briefly away (a takeover) within
the client's `retry_timeout`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import httpx

from ..contract.names import workload_id_problem
from ..contract.predictor import decode_payload
from ..errors import GatewayError, UsageError, WorkloadCancelled, WorkloadFailed
from .events import afresh_outputs, astream_events, fresh_outputs, stream_events

_LONG_POLL_S = 20.0


class GatewayCalls(Protocol):
    """What a workload handle calls on its client (`Client`)."""

    @property
    def http(self) -> httpx.Client: ...

    def async_http(self, timeout: float = 10.0) -> httpx.AsyncClient: ...

    def request(
        self, method: str, path: str, *, repeatable: bool = False, **kwargs: Any
    ) -> httpx.Response: ...

    def get_json(self, path: str, **kwargs: Any) -> Any: ...


class APIHandle(Protocol):
    """The API a workload belongs to (`AsyncAPI`)."""

    name: str

    @property
    def url(self) -> str: ...

    @property
    def client(self) -> GatewayCalls: ...


class Workload:
    """One submitted workload."""

    def __init__(self, api: APIHandle, workload_id: str) -> None:
        problem = workload_id_problem(workload_id)
        if problem:
            raise UsageError(problem)
        self.api = api
        self.id = workload_id
        self.path = f"/{api.name}/{workload_id}"  # of its routes on the gateway

    def __repr__(self) -> str:
        return f"<Workload {self.api.name}/{self.id}>"

    @property
    def url(self) -> str:
        return f"{self.api.url}/{self.id}"

    def info(self, wait: float = 0) -> dict[str, Any]:
        headers = {"Prefer": f"wait={wait:g}"} if wait > 0 else {}
        try:
            return dict(self.api.client.get_json(self.path, headers=headers))
        except GatewayError as exc:
            if exc.status_code in (400, 404):
                raise UsageError(str(exc.detail)) from None
            raise

    def status(self) -> str:
        return str(self.info()["status"])

    def progress(self) -> dict[str, Any] | None:
        return self.info().get("progress")

    def notebook(self, format: str = "ipynb") -> bytes:
        """The executed notebook of a notebook API's workload (`format="html"` to render)."""
        path, params = f"{self.path}/notebook", {"format": format}
        return self.api.client.request("GET", path, repeatable=True, params=params).content

    def cancel(self) -> dict[str, Any]:
        return dict(self.api.client.request("DELETE", self.path).json())

    # what it emits while it runs (`GET /{api}/{id}/events` and `/logs`: client/events.py)
    def stream(
        self, last_event_id: int | None = None, *, reconnect_s: float = 60.0
    ) -> Iterator[dict[str, Any]]:
        """Its events as dicts (start, progress, output, log; last the terminal one, with the
        status record) after `last_event_id` (None: all); resumes by itself after a drop or
        a gateway restart, EventStreamLost when none answered for `reconnect_s` seconds."""
        http, path = self.api.client.http, f"{self.path}/events"
        return stream_events(http, path, str(self), last_event_id, reconnect_s)

    def astream(
        self, last_event_id: int | None = None, *, reconnect_s: float = 60.0
    ) -> AsyncIterator[dict[str, Any]]:
        """`stream()` on the running event loop: `async for event in workload.astream()`."""
        http, path = self.api.client.async_http, f"{self.path}/events"
        return astream_events(http, path, str(self), last_event_id, reconnect_s)

    def outputs(self, *, reconnect_s: float = 60.0) -> Iterator[Any]:
        """Its outputs' values as they come (bytes for binary ones, None for one too large
        for an event), each index once across attempts; raises as `result()` does when it
        ends failed or cancelled."""
        return fresh_outputs(self.stream(reconnect_s=reconnect_s))

    def aoutputs(self, *, reconnect_s: float = 60.0) -> AsyncIterator[Any]:
        """`outputs()` on the running event loop: `async for value in workload.aoutputs()`."""
        return afresh_outputs(self.astream(reconnect_s=reconnect_s))

    def logs(self) -> str:
        """Its log: the newest 1 MiB of its latest attempt's stdout, stderr and logging."""
        try:
            return self.api.client.request("GET", f"{self.path}/logs", repeatable=True).text
        except GatewayError as exc:
            if exc.status_code in (400, 404):
                raise UsageError(str(exc.detail)) from None
            raise

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the result; raises WorkloadFailed, WorkloadCancelled or TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _LONG_POLL_S if deadline is None else deadline - time.monotonic()
            info = self.info(wait=max(0.0, min(left, _LONG_POLL_S)))
            status = info["status"]
            if status == "completed":
                return self._result_of(info)
            if status == "failed":
                raise WorkloadFailed(self.id, info.get("error") or {})
            if status == "cancelled":
                raise WorkloadCancelled(self.id)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workload {self.id} is still {status} after {timeout:g} s")

    def _result_of(self, info: dict[str, Any]) -> Any:
        if "result" in info:
            return info["result"]
        response = self.api.client.request("GET", f"{self.path}/result", repeatable=True)
        return decode_payload(response.content, response.headers.get("content-type"))
