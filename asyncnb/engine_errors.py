"""What the engine refuses, and the HTTP status each refusal maps to at the gateway."""

from __future__ import annotations


class EngineError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(EngineError):
    status_code = 404


class Conflict(EngineError):
    status_code = 409


class Unavailable(EngineError):
    """Storage or the API itself cannot take work now; the client should retry later."""

    status_code = 503


class StorageTimeout(Unavailable):
    pass
