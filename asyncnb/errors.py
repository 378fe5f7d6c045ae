"""Exceptions raised by asyncnb's public API."""

from __future__ import annotations

from typing import Any


class AsyncNBError(Exception):
    """Base class of every error asyncnb raises on purpose."""


class UsageError(AsyncNBError, ValueError):
    """The caller passed something invalid (bad option, unknown API, bad id...)."""


class GatewayError(AsyncNBError):
    """The gateway answered with an error status; `status_code` and `detail` say which."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"{status_code}: {detail}")


class GatewayUnreachable(AsyncNBError, ConnectionError):
    """No gateway answered at the configured URL."""


class GatewayStartFailed(AsyncNBError):
    """A gateway could not start; the message says why, in one line."""


class WorkloadFailed(AsyncNBError):
    """A workload ended in `failed`; `error` carries the remote type, message and traceback."""

    def __init__(self, workload_id: str, error: dict[str, Any]) -> None:
        self.workload_id = workload_id
        self.error = error
        self.type = str(error.get("type", "Error"))
        self.remote_message = str(error.get("message", ""))
        self.remote_traceback = str(error.get("traceback", "") or "")
        super().__init__(f"workload {workload_id} failed: {self.type}: {self.remote_message}")


class WorkloadCancelled(AsyncNBError):
    """A workload was cancelled before it produced a result."""

    def __init__(self, workload_id: str) -> None:
        self.workload_id = workload_id
        super().__init__(f"workload {workload_id} was cancelled")
