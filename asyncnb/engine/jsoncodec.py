"""Compact JSON for the hot paths (journal records, polls, submits), with orjson.

What orjson refuses (integers beyond 64 bits, for one) falls back to the standard library.
NaN and infinities are written as null, so answers are always valid JSON.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()
