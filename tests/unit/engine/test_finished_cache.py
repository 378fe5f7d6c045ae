from __future__ import annotations

from asyncnb.engine.finished_cache import FinishedCache
from asyncnb.engine.workload import WorkloadState


def _finished(
    workload_id: str, result: bytes = b"", expires_at: float | None = None
) -> WorkloadState:
    workload = WorkloadState(workload_id, "api", created_at=0.0, content_type="application/json")
    workload.result_data = result
    workload.expires_at = expires_at
    return workload


def test_oldest_go_first_when_the_count_is_reached() -> None:
    cache = FinishedCache(max_count=2, max_bytes=10**9)
    for name in ("a", "b", "c"):
        cache.remember(_finished(name))
    assert cache.get("a") is None
    assert list(reversed(cache)) == ["c", "b"]


def test_inline_results_are_bounded_by_bytes() -> None:
    cache = FinishedCache(max_count=100, max_bytes=10)
    cache.remember(_finished("a", b"x" * 6))
    cache.remember(_finished("b", b"x" * 6))
    assert cache.get("a") is None and cache["b"].id == "b"
    cache.pop("b")
    cache.remember(_finished("c", b"x" * 10))  # fits again once b's bytes were given back
    assert len(cache) == 1 and cache.get("c") is not None


def test_remembering_again_replaces_and_moves_to_the_newest() -> None:
    cache = FinishedCache(max_count=2, max_bytes=10)
    cache.remember(_finished("a", b"x" * 8))
    cache.remember(_finished("b"))
    cache.remember(_finished("a", b"x" * 2))  # a's 8 bytes are released, not counted twice
    cache.remember(_finished("c", b"x" * 8))
    assert list(reversed(cache)) == ["c", "a"]


def test_expire_forgets_only_expired_results() -> None:
    cache = FinishedCache(max_count=10, max_bytes=100)
    cache.remember(_finished("old", b"x", expires_at=5.0))
    cache.remember(_finished("new", b"x", expires_at=50.0))
    cache.remember(_finished("forever", b"x"))
    cache.expire(now=10.0)
    assert sorted(reversed(cache)) == ["forever", "new"]
