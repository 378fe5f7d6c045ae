"""Predictors for the payload benchmark (bench/payloads.py): cheap work on big bytes.

- `SizeEcho` takes a bytes payload and returns its length, so only moving the payload costs;
- `BytesResult` takes `{"n": N}` and returns `b"x" * N`, a bytes result to stream back.
"""

from __future__ import annotations

from typing import Any


class SizeEcho:
    def __init__(self, config: Any) -> None:
        pass

    def predict(self, payload: Any) -> dict[str, int]:
        return {"size": len(payload)}


class BytesResult:
    def __init__(self, config: Any) -> None:
        pass

    def predict(self, payload: Any) -> bytes:
        return b"x" * int(payload["n"])
