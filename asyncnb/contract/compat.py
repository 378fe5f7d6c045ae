"""The peers' wire contracts a gateway can speak besides its own (gateway/compat/)."""

from __future__ import annotations

from collections.abc import Iterable

# Each is served under /compat/<name> by gateway/compat/<name>.py; the order is the docs'.
COMPAT_CONTRACTS = ("runpod", "replicate", "sagemaker", "cortex")
COMPAT_PREFIX = "/compat"


def compat_problem(names: Iterable[str], what: str) -> str | None:
    """Why `names` cannot name contracts to serve, or None (`none` alone: serve none)."""
    listed = list(names)
    if listed == ["none"]:
        return None
    unknown = [n for n in listed if n not in COMPAT_CONTRACTS]
    if unknown:
        return (
            f"{what}: unknown contract {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(COMPAT_CONTRACTS)} (or none)"
        )
    return None


def enabled_contracts(names: Iterable[str]) -> tuple[str, ...]:
    listed = tuple(names)
    return () if listed == ("none",) else listed
