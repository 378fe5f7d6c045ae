"""Validation of API names and workload ids, done before any storage access."""

from __future__ import annotations

import re
import uuid

RESERVED_NAMES = frozenset(
    {"apis", "healthz", "livez", "metrics", "docs", "openapi.json", "redoc", "keys", "compat"}
)
# The patterns as text too, for routers that take regular expressions (the Jupyter extension).
API_NAME_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
WORKLOAD_ID_PATTERN = r"[0-9a-f]{32}"
# An API name that is not reserved, for routers that put API names beside reserved paths (the
# Jupyter extension's proxy must never route `/apis/...` or `/metrics` as an API).
ROUTABLE_API_NAME_PATTERN = (
    "(?!(?:"
    + "|".join(re.escape(n) for n in sorted(RESERVED_NAMES))
    + ")(?![a-z0-9-]))"
    + API_NAME_PATTERN
)
_API_NAME = re.compile(API_NAME_PATTERN)
_WORKLOAD_ID = re.compile(WORKLOAD_ID_PATTERN)
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6c1f0a52-4a0e-4d38-9a43-0b1f0f5f6a11")


def api_name_problem(name: str) -> str | None:
    """Why `name` cannot name an API, or None when it can."""
    if name in RESERVED_NAMES:
        return f"API name {name!r} is reserved"
    if not _API_NAME.fullmatch(name):
        return (
            f"invalid API name {name[:80]!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def is_workload_id(value: str) -> bool:
    return bool(_WORKLOAD_ID.fullmatch(value))


def workload_id_problem(value: str) -> str | None:
    """Why `value` cannot be a workload id, or None when it can."""
    if is_workload_id(value):
        return None
    return f"invalid workload id {value[:80]!r}: expected 32 hex digits"


def new_workload_id() -> str:
    return uuid.uuid4().hex


def idempotent_workload_id(api: str, key: str) -> str:
    """The same (api, key) always maps to the same id, so a replay needs no lookup table."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{api}\x00{key}").hex
