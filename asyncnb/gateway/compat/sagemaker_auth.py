"""Who signed a SageMaker request: SigV4 (sagemaker_sigv4.py) with asyncnb's credentials.

- An API key: its id (`0123456789abcdef`, or `ank_0123456789abcdef`) as the access key id,
  its secret (the 43 characters after the id; the whole `ank_..._...` text works too) as
  the secret key. The gateway can check the signature only of keys whose secret it can
  derive again (made while `ASYNCNB_SIGV4_SECRET` is set: engine/key_signing.py); the key's
  scopes, APIs, expiry, revocation and rate limit then apply as to a bearer key.
- The gateway's tokens: access key id `asyncnb`, the user (or admin) token as the secret.

A request without a signature is refused (403) when the gateway has a user token, and acts
for the owner when it has none, as a native request would; `Authorization: Bearer` works too.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import Request

from ...contract.keys import KEY_PREFIX, is_key_id
from ...contract.settings import GatewaySettings
from .common import Access, Caller, HTTPError, engine_of, who
from .sagemaker_sigv4 import (
    SignatureRefused,
    SignedRequest,
    check_request,
    is_sigv4,
    matching_secret,
    parse_authorization,
)

TOKEN_ACCESS_KEY_ID = "asyncnb"
SERVICE = "sagemaker"


class Refused(HTTPError):
    """A 403 with the AWS error code botocore turns into `ClientError`'s `Code`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(403, detail)
        self.code = code


def signed_request(request: Request, body: bytes) -> SignedRequest:
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return SignedRequest(
        request.method,
        raw_path.decode("latin-1"),
        scope.get("query_string", b"").decode("latin-1"),
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
        body,
    )


def _candidates(request: Request, access_key_id: str) -> list[tuple[str, str]]:
    """(secret to try, the bearer credential it stands for)."""
    settings: GatewaySettings = request.app.state.settings
    if access_key_id == TOKEN_ACCESS_KEY_ID:
        tokens = [t for t in (settings.token, settings.effective_admin_token) if t]
        return [(t, t) for t in dict.fromkeys(tokens)]
    key_id = access_key_id.removeprefix(KEY_PREFIX)
    if not is_key_id(key_id):
        raise Refused(
            "UnrecognizedClientException",
            f"unknown access key id: use an API key's id, or {TOKEN_ACCESS_KEY_ID!r} with a token",
        )
    text = engine_of(request).keys.signing_text(key_id)
    if text is None:
        raise Refused(
            "UnrecognizedClientException",
            f"API key {key_id} cannot sign SigV4 requests: the gateway derives the secrets of "
            "keys made while ASYNCNB_SIGV4_SECRET is set only (send it as a Bearer key)",
        )
    secret = text[len(f"{KEY_PREFIX}{key_id}_") :]
    return [(secret, text), (text, text)]


def sagemaker_caller(
    request: Request, api: str, body: bytes, now: datetime | None = None
) -> Caller:
    """Who the request acts for, allowed to invoke `api`; else HTTPError (403: `Refused`)."""
    authorization = request.headers.get("authorization", "")
    settings: GatewaySettings = request.app.state.settings
    if not authorization:
        if settings.token is not None:
            raise Refused(
                "MissingAuthenticationTokenException",
                "missing SigV4 signature: sign with an API key (its id and secret) or with "
                f"access key id {TOKEN_ACCESS_KEY_ID!r} and the gateway's token",
            )
        return who(request, Access.INVOKE, api)
    if not is_sigv4(authorization):
        return who(request, Access.INVOKE, api)
    try:
        credential = parse_authorization(authorization)
        signed = signed_request(request, body)
        check_request(signed, credential, SERVICE, now or datetime.now(timezone.utc))
    except SignatureRefused as exc:
        raise Refused(exc.code, exc.message) from None
    if credential.access_key_id == TOKEN_ACCESS_KEY_ID and settings.token is None:
        return who(request, Access.INVOKE, api)  # an open gateway: nothing to check it with
    candidates = _candidates(request, credential.access_key_id)
    index = matching_secret(signed, credential, [secret for secret, _ in candidates])
    if index is None:
        raise Refused(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided: "
            "check the secret key and the signing method",
        )
    return who(request, Access.INVOKE, api, f"Bearer {candidates[index][1]}")
