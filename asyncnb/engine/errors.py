"""What the engine refuses, each with the HTTP status the gateway answers it with."""

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


def storage_unavailable(exc: BaseException) -> Unavailable:
    """What a failed storage call means to a client: nothing changed, retry later."""
    return Unavailable(f"storage is unavailable: {exc}")
