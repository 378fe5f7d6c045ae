"""Who may do what: the one access check of the FastAPI routes and the fast path.

A gateway with `--token` admits the user token (and the admin token) on workload and read
routes, and only the admin token on deploy routes; without `--token` everything is open, and
deploy routes need the admin token when one is set. Tokens come as `Authorization: Bearer
<token>` and are compared in constant time.
"""

from __future__ import annotations

import secrets
from enum import Enum

from ..contract.settings import GatewaySettings
from .errors import HTTPError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Role(Enum):
    USER = "user"  # submit, poll, read
    ADMIN = "admin"  # deploy and undeploy


def _matches(given: str, token: str) -> bool:
    return secrets.compare_digest(given.strip().encode(), token.encode())


def access_problem(
    settings: GatewaySettings,
    authorization: str,
    role: Role,
    *,
    query_token: str | None = None,
) -> HTTPError | None:
    """Why a request with this `Authorization` header may not act as `role`, or None.

    `query_token` is a `?token=` the docs page passes (a browser cannot send a header); it
    admits the user token only.
    """
    if role is Role.USER:
        if settings.token is None:
            return None
        accepted = [t for t in (settings.token, settings.effective_admin_token) if t]
        if query_token and _matches(query_token, settings.token):
            return None
    else:
        admin = settings.effective_admin_token
        if admin is None:
            return None
        accepted = [admin]
    if not authorization:
        return HTTPError(401, "missing token: send 'Authorization: Bearer <token>'", _CHALLENGE)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return HTTPError(401, "malformed Authorization header: use 'Bearer <token>'", _CHALLENGE)
    # every token is compared, so the time taken says nothing of which one came close
    matched = [_matches(given, token) for token in accepted]
    return None if any(matched) else HTTPError(403, "invalid token")
