"""The issue-6 targets: their goals, and the verdicts the report draws from each part's JSON.

`bench.run` writes raw figures only, so its targets are judged here; the other parts write their
own `targets` list, which `all_targets` collects in part order (`bench.streaming`'s: every
output delivered to each of 1,000 streams, in order; no-op throughput after streaming at least
0.95x that before it, the medians of alternating runs).
"""

from __future__ import annotations

import math
from typing import Any

from bench.harness import target

CELERY_TARGET, CEILING_TARGET, ISSUE2_TARGET = 3.5, 0.5, 2.0
SUBMIT_P50_TARGET_MS, GET_P50_TARGET_MS = 5.0, 2.0
VERDICT = {True: "met", False: "**not met**", None: "not measured"}


def num_or_nan(value: Any) -> float:
    """A JSON figure as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    res = data.get("results", {})
    ours = num_or_nan(res.get("asyncnb", {}).get("e2e_per_s"))
    celery = num_or_nan(res.get("celery", {}).get("e2e_per_s"))
    ceiling = num_or_nan(res.get("noop", {}).get("e2e_per_s"))
    vs_celery, vs_ceiling = ours / celery, ours / ceiling
    known = not math.isnan(vs_celery)
    return [
        target(
            "end-to-end throughput, asyncnb / FastAPI+Celery+Redis",
            f">= {CELERY_TARGET:g}x (issue 2: >= {ISSUE2_TARGET:g}x)",
            f"{vs_celery:.3g}x ({ours:.0f} vs {celery:.0f} workloads/s)",
            vs_celery >= CELERY_TARGET if known else None,
        ),
        target(
            "end-to-end throughput, asyncnb / noop ceiling",
            f">= {CEILING_TARGET:g}x",
            f"{vs_ceiling:.3g}x ({ours:.0f} vs {ceiling:.0f} workloads/s)",
            vs_ceiling >= CEILING_TARGET if not math.isnan(vs_ceiling) else None,
        ),
        *paced_targets(data),
    ]


def paced_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit and GET p50 of asyncnb from the paced phase, next to the noop ceiling's.

    Saturated p50s are C / rate by Little's law (the noop ceiling's own exceed 5 ms), so these
    targets are judged at a rate every system sustains; the saturated figures stay in the
    end-to-end table.
    """
    res = data.get("results", {})
    ours, ceiling = res.get("asyncnb", {}).get("paced"), res.get("noop", {}).get("paced")
    clients = data.get("meta", {}).get("concurrency", "?")
    rows = []
    for what, key, goal in (
        ("submit (POST /{api})", "submit_p50_ms", SUBMIT_P50_TARGET_MS),
        ("GET /{api}/{id}", "get_p50_ms", GET_P50_TARGET_MS),
    ):
        name = f"{what} p50, no-op JSON, {clients} clients paced"
        if not ours:
            rows.append(
                target(name, f"<= {goal:g} ms", "no paced asyncnb result in run.json", None)
            )
            continue
        p50 = num_or_nan(ours.get(key))
        measured = (
            f"{p50:.2f} ms at {num_or_nan(ours.get('offered_per_s')):.0f}/s offered "
            f"({num_or_nan(ours.get('submit_per_s')):.0f}/s achieved"
        )
        if ceiling:
            measured += f"; noop ceiling {num_or_nan(ceiling.get(key)):.2f} ms"
        late, n = ours.get("late_over_10ms", 0), ours.get("n", 0)
        if late:
            measured += f"; {late} of {n} submits > 10 ms behind schedule"
        measured += ")"
        measured += curve_reach(res.get("asyncnb", {}).get("curve") or [], key, goal)
        met: bool | None = None if math.isnan(p50) else p50 <= goal
        if ours.get("failures") or ours.get("timed_out"):
            # A run that lost workloads does not meet a latency target, however fast.
            measured += f", {ours.get('failures')} failures"
            met = False
        rows.append(target(name, f"<= {goal:g} ms", measured, met))
    return rows


def curve_reach(points: list[dict[str, Any]], key: str, goal: float) -> str:
    """How far up the load curve a latency target holds: the highest offered rate at which it
    and every lower one kept the p50 within the goal, kept up and lost nothing."""
    held = None
    for point in sorted(points, key=lambda p: num_or_nan(p.get("offered_per_s"))):
        offered = num_or_nan(point.get("offered_per_s"))
        kept_up = num_or_nan(point.get("submit_per_s")) >= 0.95 * offered
        ok = num_or_nan(point.get(key)) <= goal and kept_up and not point.get("failures")
        if not ok:
            break
        held = offered
    if not points:
        return ""
    if held is None:
        return f"; above {goal:g} ms at every rate of the load curve"
    return f"; within {goal:g} ms up to {held:.0f}/s on the load curve"


def all_targets(data: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if "run" in data:
        found += [("run", t) for t in run_targets(data["run"])]
    for part in ("queue", "payloads", "latency", "fairness", "streaming"):
        if part in data:
            found += [(part, t) for t in data[part].get("targets", [])]
    return found
