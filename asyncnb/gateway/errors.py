"""The gateway's refusals, and the one error response every path answers them with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..engine.errors import EngineError, Unavailable

RETRY_AFTER_S = 5


class HTTPError(Exception):
    """A request the gateway refuses before the engine sees it (bad header, token, body...)."""

    status_code = 400

    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


@dataclass
class ErrorAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]


def error_answer(status: int, detail: Any, headers: dict[str, str] | None = None) -> ErrorAnswer:
    """`{"detail": ...}` with `status`: the body of every error the gateway answers."""
    body = json.dumps({"detail": detail}, ensure_ascii=False, separators=(",", ":")).encode()
    return ErrorAnswer(status, body, dict(headers or {}))


def answer_for(exc: EngineError | HTTPError) -> ErrorAnswer:
    """What a refusal of the engine or the gateway answers; a 503 says when to retry."""
    headers = dict(getattr(exc, "headers", None) or {})
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return error_answer(exc.status_code, exc.detail, headers)


INTERNAL_ERROR = error_answer(500, "internal error; see the gateway log")
