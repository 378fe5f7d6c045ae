"""Predictor the benchmark deploys to asyncnb: echoes its payload so only overhead is measured."""

from __future__ import annotations

from typing import Any


class NoOp:
    def __init__(self, config: Any) -> None:
        pass

    def predict(self, payload: Any) -> Any:
        return payload
