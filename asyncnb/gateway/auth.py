"""Who may do what: the one access check of the FastAPI routes and the fast path.

Two kinds of credential come as `Authorization: Bearer <credential>`:

- the gateway's tokens. With `--token`, the user token (and the admin token) may call every
  API and the gateway-wide reads (`/apis`, `/metrics`, `/docs`), and only the admin token may
  deploy and manage keys; without `--token` everything is open, and deploying and keys need
  the admin token when one is set. They are compared in constant time. What they submit is
  attributed to `owner`.
- API keys (`ank_...`, engine/keys.py), each naming its APIs and scopes: `invoke` submits and
  reaches the key's own workloads, `read` sees the API's status and recent workloads. A key
  is checked wherever it is presented, even on an open gateway, so that its attribution,
  rate limit and revocation always hold.

The answers: no credential, or one that names nobody (unknown, revoked, expired), is 401; a
known credential asking for more than it grants is 403; a key past its rate limit is 429
with `Retry-After`.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..contract.keys import OWNER, Scope, parse_key
from ..contract.settings import GatewaySettings
from ..engine.keys import APIKey, KeyRefused, KeyRing
from ..engine.workload import WorkloadState
from .errors import HTTPError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_REFUSED_KEY = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class Access(Enum):
    ADMIN = "admin"  # deploy, undeploy, keys
    GATEWAY = "gateway"  # gateway-wide reads: /apis, /metrics, /docs
    INVOKE = "invoke"  # submit to one API
    READ = "read"  # one API's status and recent workloads
    WORKLOAD = "workload"  # one workload: the route then asks `may_see` or `must_own`


@dataclass(frozen=True)
class Caller:
    """Who a request acts for: a key, or the people holding the gateway's tokens."""

    key: APIKey | None = None

    @property
    def name(self) -> str:
        """What its workloads record as `submitted_by`."""
        return self.key.name if self.key else OWNER

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None

    def owns(self, workload: WorkloadState) -> bool:
        return self.key is None or workload.key_id == self.key.id

    def may_read(self) -> bool:
        return self.key is None or Scope.READ in self.key.scopes

    def must_own(self, workload: WorkloadState) -> None:
        if not self.owns(workload):
            raise HTTPError(403, f"workload {workload.id} was submitted by another caller")

    def may_see(self, workload: WorkloadState) -> None:
        if not self.owns(workload) and not self.may_read():
            raise HTTPError(403, f"workload {workload.id} was submitted by another caller")

    def view(self, workload: WorkloadState) -> dict[str, Any]:
        """The status record as this caller may see it: another caller's data (its result,
        its error's details, its webhook) stays with that caller."""
        view = workload.public()
        if self.owns(workload):
            return view
        view.pop("result", None)
        view.pop("webhook", None)
        if "error" in view:
            view["error"] = {"type": view["error"].get("type", "")}
        return view


OWNER_CALLER = Caller()


def _matches(given: str, token: str) -> bool:
    return secrets.compare_digest(given.strip().encode(), token.encode())


def _bearer(authorization: str) -> str:
    """The credential of a bearer header; HTTPError when there is none or it is malformed."""
    if not authorization:
        raise HTTPError(401, "missing token: send 'Authorization: Bearer <token>'", _CHALLENGE)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPError(401, "malformed Authorization header: use 'Bearer <token>'", _CHALLENGE)
    return given.strip()


def _presented_key(authorization: str) -> str | None:
    scheme, _, given = authorization.partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and parse_key(given) is not None else None


def authorize(
    settings: GatewaySettings,
    keys: KeyRing | None,
    authorization: str,
    access: Access,
    api: str | None = None,
    *,
    query_token: str | None = None,
    now: float | None = None,
) -> Caller:
    """Who the request acts for, if it may ask for `access` (to `api`); else HTTPError.

    `query_token` is a `?token=` the docs page passes (a browser cannot send a header); it
    admits the user token only, and only to the gateway-wide reads.
    """
    key_text = _presented_key(authorization) if keys is not None else None
    if key_text is not None and keys is not None:
        return Caller(_key_access(keys, key_text, access, api, now))
    if access is Access.ADMIN:
        admin = settings.effective_admin_token
        if admin is None:
            return OWNER_CALLER
        accepted = [admin]
    else:
        if settings.token is None:
            return OWNER_CALLER
        if access is Access.GATEWAY and query_token and _matches(query_token, settings.token):
            return OWNER_CALLER
        accepted = [t for t in (settings.token, settings.effective_admin_token) if t]
    given = _bearer(authorization)
    # every token is compared, so the time taken says nothing of which one came close
    matched = [_matches(given, token) for token in accepted]
    if any(matched):
        return OWNER_CALLER
    if access is Access.ADMIN and settings.token and _matches(given, settings.token):
        raise HTTPError(403, "this needs the admin token; the user token may not")
    raise HTTPError(403, "invalid token")


def _key_access(
    keys: KeyRing, given: str, access: Access, api: str | None, now: float | None
) -> APIKey:
    now = time.time() if now is None else now
    try:
        key = keys.check(given, now)
    except KeyRefused as exc:
        raise HTTPError(401, str(exc), _REFUSED_KEY) from None
    # Counted before the checks below, so a flood of refused calls is slowed down as well.
    if key.bucket is not None:
        wait = key.bucket.take(now)
        if wait > 0:
            raise HTTPError(
                429,
                f"API key {key.id} ({key.name}) is past its rate limit of {key.rate_limit:g} "
                f"requests/s (burst {key.bucket.burst})",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
    if access in (Access.ADMIN, Access.GATEWAY) or api is None:
        raise HTTPError(403, "an API key may only call the workload routes of its APIs")
    if not key.allows_api(api):
        raise HTTPError(403, f"API key {key.id} may not call API {api!r}")
    needed = {Access.INVOKE: Scope.INVOKE, Access.READ: Scope.READ}.get(access)
    if needed is not None and needed not in key.scopes:
        raise HTTPError(403, f"API key {key.id} lacks the {needed.value!r} scope")
    return key
