"""asyncnb API keys at the Jupyter server: where a key is accepted, and where it is refused.

A key (`ank_<id>_<secret>`, asyncnb.contract.keys) is a credential of the *gateway*, never of
the Jupyter server. So:

- the workload routes under /asyncnb/{api} take a key in `Authorization` instead of Jupyter
  credentials, and hand it to the gateway, which decides (handlers.KeyOrJupyterHandler);
- every other route of the server refuses any request that carries a key, with a clear 403,
  before the server's own authentication runs (`refuse_keys_elsewhere`). A key-holder so never
  reaches kernels, terminals, contents or pages, and a key is never handed to Jupyter's
  identity provider (under JupyterHub, that would send it to the hub as a token to check).

The refusal hooks the server's identity provider, the one place where every JupyterHandler
(API routes, pages, websockets, and other extensions' routes) asks who the caller is:
`JupyterHandler.prepare` calls `identity_provider.get_user(handler)` first. Its `get_user` is
wrapped on the instance, so this works for whichever provider the server runs (the default
token/password one, JupyterHub's single-user provider, any custom one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tornado import httputil, web

from asyncnb.contract.keys import looks_like_key, parse_key

KEY_ONLY_ROUTES = (
    "an asyncnb API key reaches only the workload routes of its APIs under /asyncnb/<api> "
    "(submit, status, workloads, result); every other route of this Jupyter server needs "
    "the owner's Jupyter login"
)
KEY_NOT_IN_URL = (
    "an asyncnb API key is sent as 'Authorization: Bearer <key>', never in the URL "
    "(URLs end up in logs and browser histories)"
)
_GUARD_MARK = "_asyncnb_refuses_keys"


class KeyRefused(web.HTTPError):
    """403 for a request that carries an asyncnb key where keys are not accepted.

    Its explanation goes into the answer (JSON for API routes, Jupyter's error page for
    pages) but not into tornado's warning line, which would add the request's URI, where a
    misplaced key could sit."""

    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)

    def get_message(self) -> str | None:
        return None


def header_key(request: httputil.HTTPServerRequest) -> str | None:
    """The asyncnb key in the request's `Authorization` (Bearer or token scheme), else None."""
    authorization = request.headers.get("Authorization", "")
    if not looks_like_key(authorization):
        return None
    _scheme, _, value = authorization.strip().partition(" ")
    return value.strip() or authorization.strip()


def url_key(request: httputil.HTTPServerRequest) -> bool:
    """Whether a query argument holds something shaped like an asyncnb key."""
    return any(
        parse_key(value.decode("utf-8", "replace")) is not None
        for values in request.query_arguments.values()
        for value in values
    )


def key_refusal(request: httputil.HTTPServerRequest) -> str | None:
    """Why a request may not go on to Jupyter's authentication: it carries a key."""
    if header_key(request) is not None:
        return KEY_ONLY_ROUTES
    if url_key(request):
        return KEY_NOT_IN_URL
    return None


def refuse_keys_elsewhere(provider: Any, log: logging.Logger) -> None:
    """Make `provider.get_user` answer 403 to any request that carries an asyncnb key.

    The routes that accept keys never call it for a key request; so a key that reaches it is
    on a route of Jupyter's (or asks in the URL), and goes no further.
    """
    original: Callable[[web.RequestHandler], Any] = provider.get_user
    if getattr(original, _GUARD_MARK, False):
        return

    def get_user(handler: web.RequestHandler) -> Any:
        why = key_refusal(handler.request)
        if why is None:
            return original(handler)
        # Known to be nobody, for @web.authenticated, the access log and the error page.
        handler.current_user = None
        handler._jupyter_current_user = None  # type: ignore[attr-defined]
        log.warning(
            "asyncnb: refused an API key on %s %s: %s",
            handler.request.method,
            handler.request.path,
            "keys reach only /asyncnb/<api> routes" if why is KEY_ONLY_ROUTES else "key in URL",
        )
        raise KeyRefused(why)

    setattr(get_user, _GUARD_MARK, True)
    get_user.__wrapped__ = original  # type: ignore[attr-defined]
    # On the instance: the server's handlers all share it (web_app.settings["identity_provider"]).
    provider.get_user = get_user
