"""The client's words: API names checked before they reach a URL, and gateway answers as
the one-line text that notebooks, scripts and the CLI print."""

from __future__ import annotations

from typing import Any

from ..contract.names import api_name_problem
from ..errors import UsageError


def checked_api_name(name: str) -> str:
    """`name`, or a UsageError before it can reach a URL (where httpx would resolve '..')."""
    problem = api_name_problem(name)
    if problem is not None:
        raise UsageError(problem)
    return name


def explain_detail(detail: Any) -> str:
    """A gateway's `detail` as one line: validation issues become `option: message; ...`."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[2:] or d.get('loc', []))}: {d.get('msg')}"
            for d in detail
        )
    return str(detail)


def describe_api(info: dict[str, Any]) -> str:
    """An API's status record as one line: what `summary()`, the CLI and the magics print."""
    return (
        f"{info['name']} v{info['version']} {info['state']}: "
        f"{info['queue_depth']} queued, {info['in_progress']} in progress, "
        f"{info['completed']} completed, {info['failed']} failed, "
        f"workers {info['workers']}→{info['desired_workers']}  {info['endpoint']}"
    )
