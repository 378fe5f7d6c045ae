"""API names, workload ids and idempotent ids."""

from __future__ import annotations

import pytest

from asyncnb.contract.names import (
    RESERVED_NAMES,
    api_name_problem,
    idempotent_workload_id,
    is_workload_id,
    new_workload_id,
)


@pytest.mark.parametrize("name", ["a", "9", "iris", "my-model-2", "a" * 63, "x-y", "0abc9"])
def test_valid_api_names(name: str) -> None:
    assert api_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-lead",
        "trail-",
        "Upper",
        "under_score",
        "dot.name",
        "a" * 64,
        "sp ace",
        "../etc",
        "a/b",
        "ünï",
    ],
)
def test_invalid_api_names(name: str) -> None:
    problem = api_name_problem(name)
    assert problem is not None and "invalid API name" in problem


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_api_names(name: str) -> None:
    problem = api_name_problem(name)
    assert problem is not None and "reserved" in problem


def test_long_name_is_truncated_in_the_message() -> None:
    problem = api_name_problem("A" * 5000)
    assert problem is not None and len(problem) < 300


def test_api_name_with_trailing_newline_is_invalid() -> None:
    assert api_name_problem("iris\n") is not None


def test_valid_workload_ids() -> None:
    assert is_workload_id("0123456789abcdef" * 2)
    assert is_workload_id(new_workload_id())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "..",
        "../" + "a" * 29,
        "0123456789ABCDEF" * 2,
        "0123456789abcdef" * 2 + "0",
        "0123456789abcdef" * 2 + "/x",
        "0123456789abcdef",
        "g" * 32,
        "a" * 300,
        "01234567-89ab-cdef-0123-456789abcdef",
    ],
)
def test_invalid_workload_ids(value: str) -> None:
    assert not is_workload_id(value)


def test_workload_id_with_trailing_newline_is_invalid() -> None:
    assert not is_workload_id("0123456789abcdef" * 2 + "\n")


def test_new_workload_ids_are_unique() -> None:
    ids = {new_workload_id() for _ in range(200)}
    assert len(ids) == 200


def test_idempotent_ids_are_stable_valid_and_distinct() -> None:
    first = idempotent_workload_id("iris", "order-17")
    assert first == idempotent_workload_id("iris", "order-17")
    assert is_workload_id(first)
    assert first != idempotent_workload_id("iris", "order-18")
    assert first != idempotent_workload_id("other", "order-17")


def test_idempotent_ids_do_not_collide_across_the_separator() -> None:
    assert idempotent_workload_id("a-b", "c") != idempotent_workload_id("a", "b-c")
    assert idempotent_workload_id("ab", "c") != idempotent_workload_id("a", "bc")


def test_idempotent_id_is_pinned() -> None:
    """Changing the namespace would silently break replays of keys sent before an upgrade."""
    assert idempotent_workload_id("iris", "k") == "8cea94cf3e805508b57e33cacad31df8"
    assert len({idempotent_workload_id("iris", str(i)) for i in range(100)}) == 100
