"""The one access check of every route, and the one error answer every refusal gets."""

from __future__ import annotations

import json

import pytest

from asyncnb.contract.settings import GatewaySettings
from asyncnb.engine.errors import Conflict, NotFound, StorageTimeout, Unavailable
from asyncnb.gateway.auth import Access, authorize
from asyncnb.gateway.errors import INTERNAL_ERROR, HTTPError, answer_for, error_answer

USER, ADMIN, GATEWAY = Access.INVOKE, Access.ADMIN, Access.GATEWAY
OPEN = GatewaySettings(token=None, admin_token=None)
ADMIN_ONLY = GatewaySettings(token=None, admin_token="adm")
USER_ONLY = GatewaySettings(token="usr", admin_token=None)
BOTH = GatewaySettings(token="usr", admin_token="adm")


def access_problem(
    settings: GatewaySettings, header: str, role: Access, query_token: str | None = None
) -> HTTPError | None:
    try:
        caller = authorize(settings, None, header, role, "iris", query_token=query_token)
    except HTTPError as exc:
        return exc
    assert caller.name == "owner" and caller.key is None
    return None


def status_of(
    settings: GatewaySettings, header: str, role: Access, query_token: str | None = None
) -> int | None:
    problem = access_problem(settings, header, role, query_token=query_token)
    return None if problem is None else problem.status_code


@pytest.mark.parametrize(
    ("settings", "header", "role", "expected"),
    [
        # no token: everything open, whatever is sent
        (OPEN, "", USER, None),
        (OPEN, "", ADMIN, None),
        (OPEN, "Bearer anything", ADMIN, None),
        (OPEN, "Basic garbage", USER, None),
        # only an admin token: workloads open, deploys need it
        (ADMIN_ONLY, "", USER, None),
        (ADMIN_ONLY, "", ADMIN, 401),
        (ADMIN_ONLY, "Bearer adm", ADMIN, None),
        (ADMIN_ONLY, "Bearer usr", ADMIN, 403),
        # only a user token: it is the admin token too
        (USER_ONLY, "Bearer usr", USER, None),
        (USER_ONLY, "Bearer usr", ADMIN, None),
        (USER_ONLY, "", USER, 401),
        (USER_ONLY, "", ADMIN, 401),
        (USER_ONLY, "Bearer adm", ADMIN, 403),
        # both tokens
        (BOTH, "Bearer usr", USER, None),
        (BOTH, "Bearer adm", USER, None),
        (BOTH, "Bearer adm", ADMIN, None),
        (BOTH, "Bearer usr", ADMIN, 403),
        (BOTH, "Bearer wrong", USER, 403),
        (BOTH, "Bearer wrong", ADMIN, 403),
        (BOTH, "Bearer us", USER, 403),
        (BOTH, "Bearer usrx", USER, 403),
        (BOTH, "", USER, 401),
        (BOTH, "", ADMIN, 401),
    ],
)
def test_access_matrix(
    settings: GatewaySettings, header: str, role: Access, expected: int | None
) -> None:
    assert status_of(settings, header, role) == expected
    if role is USER:  # the gateway-wide reads admit the same tokens
        assert status_of(settings, header, GATEWAY) == expected


@pytest.mark.parametrize(
    "header", ["Basic dXNyOg==", "Bearer", "Bearer ", "Bearer    ", "Token usr", "usr"]
)
def test_malformed_headers_are_401_with_a_challenge(header: str) -> None:
    problem = access_problem(BOTH, header, USER)
    assert problem is not None
    assert problem.status_code == 401
    assert "malformed Authorization header" in problem.detail
    assert problem.headers == {"WWW-Authenticate": "Bearer"}


def test_missing_header_is_401_with_a_challenge() -> None:
    problem = access_problem(BOTH, "", ADMIN)
    assert problem is not None
    assert (problem.status_code, problem.headers) == (401, {"WWW-Authenticate": "Bearer"})
    assert "missing token" in problem.detail


def test_wrong_token_is_403_without_a_challenge() -> None:
    problem = access_problem(BOTH, "Bearer nope", USER)
    assert problem is not None
    assert (problem.status_code, problem.detail, problem.headers) == (403, "invalid token", {})


@pytest.mark.parametrize("header", ["bearer usr", "BEARER usr", "BeArEr usr"])
def test_scheme_is_case_insensitive(header: str) -> None:
    assert status_of(BOTH, header, USER) is None


@pytest.mark.parametrize("header", ["Bearer  usr", "Bearer usr ", "Bearer \tusr\t "])
def test_whitespace_around_the_token_is_ignored(header: str) -> None:
    assert status_of(BOTH, header, USER) is None


def test_whitespace_only_token_is_refused() -> None:
    assert status_of(BOTH, "Bearer    ", USER) in (401, 403)


def test_tokens_are_case_sensitive() -> None:
    assert status_of(BOTH, "Bearer USR", USER) == 403


@pytest.mark.parametrize(
    ("query_token", "header", "role", "expected"),
    [
        ("usr", "", GATEWAY, None),
        ("usr", "Basic x", GATEWAY, None),
        ("adm", "", GATEWAY, 401),  # the query admits the user token only
        ("usr", "", ADMIN, 401),  # and only for the gateway-wide reads (the docs page)
        ("usr", "", USER, 401),
        ("adm", "", ADMIN, 401),
        ("wrong", "", GATEWAY, 401),
        ("wrong", "Bearer usr", GATEWAY, None),  # a bad query token does not spoil a header
        ("", "", GATEWAY, 401),
        (None, "", GATEWAY, 401),
    ],
)
def test_query_token(
    query_token: str | None, header: str, role: Access, expected: int | None
) -> None:
    assert status_of(BOTH, header, role, query_token) == expected


def test_the_user_token_on_an_admin_route_says_so() -> None:
    problem = access_problem(BOTH, "Bearer usr", ADMIN)
    assert problem is not None and problem.status_code == 403
    assert "admin token" in problem.detail


def test_query_token_on_an_open_gateway() -> None:
    assert status_of(OPEN, "", GATEWAY, "whatever") is None
    assert status_of(ADMIN_ONLY, "", ADMIN, "adm") == 401


# error answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [Unavailable("storage is down"), StorageTimeout("no answer")])
def test_unavailable_says_when_to_retry(exc: Unavailable) -> None:
    answer = answer_for(exc)
    assert answer.status == 503
    assert answer.headers == {"Retry-After": "5"}
    assert json.loads(answer.body) == {"detail": exc.detail}
    assert answer.raw_headers() == [(b"retry-after", b"5")]


@pytest.mark.parametrize(("exc", "status"), [(NotFound("gone"), 404), (Conflict("done"), 409)])
def test_other_engine_errors_have_no_retry_after(exc: Exception, status: int) -> None:
    answer = answer_for(exc)  # type: ignore[arg-type]
    assert (answer.status, answer.headers) == (status, {})
    assert json.loads(answer.body) == {"detail": str(exc)}


def test_http_error_headers_are_kept_and_not_shared() -> None:
    exc = HTTPError(401, "missing token", {"WWW-Authenticate": "Bearer"})
    answer = answer_for(exc)
    assert (answer.status, answer.headers) == (401, {"WWW-Authenticate": "Bearer"})
    answer.headers["X-Other"] = "1"
    assert exc.headers == {"WWW-Authenticate": "Bearer"}
    assert answer.raw_headers() == [(b"www-authenticate", b"Bearer"), (b"x-other", b"1")]


def test_error_answer_bodies() -> None:
    answer = error_answer(422, [{"loc": ["body", "gpu"], "msg": "too big", "type": "x"}])
    assert answer.status == 422
    assert json.loads(answer.body) == {
        "detail": [{"loc": ["body", "gpu"], "msg": "too big", "type": "x"}]
    }
    assert json.loads(error_answer(400, "żółw: bad").body) == {"detail": "żółw: bad"}
    assert error_answer(400, "x").headers == {}
    headers = {"A": "1"}
    given = error_answer(400, "x", headers)
    given.headers["B"] = "2"
    assert headers == {"A": "1"}


def test_internal_error_says_nothing_of_the_cause() -> None:
    assert INTERNAL_ERROR.status == 500
    assert json.loads(INTERNAL_ERROR.body) == {"detail": "internal error; see the gateway log"}
