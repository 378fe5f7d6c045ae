"""Cortex's autoscaling algorithm on synthetic queue traces."""

from __future__ import annotations

from typing import Any

from asyncnb.contract.options import APIOptions
from asyncnb.engine.autoscaler import Autoscaler


def scaler(**options: Any) -> Autoscaler:
    base = {
        "window": 1,
        "upscale_stabilization_period": 0,
        "downscale_stabilization_period": 0,
        "target_in_flight": 1,
        "min_replicas": 0,
    }
    return Autoscaler(APIOptions(**{**base, **options}), started_at=0.0)


def run(auto: Autoscaler, trace: list[float], current: int, interval: float = 1.0) -> list[int]:
    """Feed one sample per interval, applying each recommendation (an ideal cluster)."""
    replicas = []
    for step, in_flight in enumerate(trace):
        current = auto.recommend(100.0 + step * interval, in_flight, current).replicas
        replicas.append(current)
    return replicas


def test_upscale_is_bounded_by_factor_but_at_least_one() -> None:
    assert run(scaler(max_replicas=100), [10] * 6, current=1) == [2, 3, 5, 8, 10, 10]


def test_downscale_is_bounded_by_factor_but_at_least_one() -> None:
    assert run(scaler(), [0] * 6, current=10) == [8, 6, 5, 4, 3, 2]


def test_tolerance_keeps_the_current_count() -> None:
    auto = scaler(max_replicas=100, target_in_flight=10)
    assert auto.recommend(100, 205, 20).replicas == 20  # 21 is within 5 % of 20
    assert auto.recommend(101, 230, 20).replicas == 23
    auto = scaler(target_in_flight=10)
    assert auto.recommend(100, 195, 20).replicas == 20  # 20 needed: unchanged


def test_window_averages_the_samples() -> None:
    auto = scaler(window=4, max_upscale_factor=10)
    assert auto.recommend(100, 8, 1).replicas == 8
    auto.recommend(101, 0, 8)
    auto.recommend(102, 0, 8)
    assert auto.recommend(103, 0, 8).replicas == 6  # average 2, bounded to 6 from 8


def test_min_and_max_replicas_clamp() -> None:
    assert scaler(max_replicas=3).recommend(100, 50, 3).replicas == 3
    assert scaler(min_replicas=2).recommend(100, 0, 2).replicas == 2


def test_downscale_stabilization_keeps_the_highest_recent_recommendation() -> None:
    auto = scaler(downscale_stabilization_period=5)
    auto._recommendations.clear()
    replicas = run(auto, [4, 4, 0, 0, 0, 0, 0, 0, 0], current=4)
    assert replicas[:6] == [4, 4, 4, 4, 4, 4]  # a burst's recommendation holds for 5 s
    assert replicas[-1] < 4


def test_upscale_stabilization_keeps_the_lowest_recent_recommendation() -> None:
    auto = scaler(upscale_stabilization_period=3, max_upscale_factor=10)
    auto.started_at = 0
    replicas = run(auto, [1, 1, 1, 8, 8, 8, 8], current=1)
    assert replicas[3] == 1 and replicas[4] == 1  # one spike does not scale up at once
    assert replicas[-1] == 8


def test_no_scaling_during_the_first_stabilization_period() -> None:
    auto = Autoscaler(APIOptions(window=1, target_in_flight=1), started_at=100.0)
    held = auto.recommend(110.0, 20, 2)
    assert held.replicas == 2 and "first stabilization" in held.reason
    held = auto.recommend(111.0, 0, 2)
    assert held.replicas == 2


def test_work_waiting_on_zero_replicas_scales_to_one_at_once() -> None:
    auto = Autoscaler(APIOptions(min_replicas=0, upscale_stabilization_period=60), started_at=0.0)
    first = auto.recommend(1.0, 1, 0)
    assert first.replicas == 1 and "zero replicas" in first.reason
    assert Autoscaler(APIOptions(min_replicas=0), 0.0).recommend(1.0, 0, 0).replicas == 0


def test_the_bounds_hold_even_during_the_first_stabilization() -> None:
    # New bounds (a deploy, or PATCH /apis/{api}) apply at once, stabilizing or not.
    auto = Autoscaler(APIOptions(window=1, min_replicas=3, max_replicas=5), started_at=100.0)
    raised = auto.recommend(101.0, 0, 1)
    assert raised.replicas == 3 and "below min_replicas" in raised.reason
    lowered = auto.recommend(102.0, 50, 8)
    assert lowered.replicas == 5 and "above max_replicas" in lowered.reason
    assert auto.recommend(103.0, 50, 4).replicas == 4  # within: the stabilization holds
