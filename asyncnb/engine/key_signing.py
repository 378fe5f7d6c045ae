"""Key secrets a gateway can derive again, so keys can sign requests (SigV4) as well as bear.

A SigV4 verifier needs the signer's secret itself (it computes the same HMAC), but the
storage keeps only a salted hash of a key's secret. With a signing secret set in
`ASYNCNB_SIGV4_SECRET` (the same on every gateway of a storage: active and standbys), a new
key's secret is not random but `base64url(HMAC-SHA256(signing secret, "asyncnb-key:" + id))`:
the gateway computes it again from the key's id whenever a signature is checked, and nothing
secret is stored at all. The key's text, its hash and how a bearer key is checked are as
before. Whoever holds the signing secret can compute every such key's secret: keep it like
the tokens (a secret store, not a manifest), and never log it. Changing it ends SigV4 for the
keys made before (their bearer form keeps working, its hash is unchanged).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SIGNING_SECRET_ENV = "ASYNCNB_SIGV4_SECRET"
MIN_SIGNING_SECRET_CHARS = 32


class KeySigning:
    def __init__(self, signing_secret: str) -> None:
        if len(signing_secret) < MIN_SIGNING_SECRET_CHARS:
            raise ValueError(
                f"{SIGNING_SECRET_ENV} must be at least {MIN_SIGNING_SECRET_CHARS} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        self._secret = signing_secret.encode()

    def __repr__(self) -> str:
        return "KeySigning(<secret>)"

    def secret_of(self, key_id: str) -> str:
        """The 43-character secret of the key `key_id` (the format of `ank_<id>_<secret>`)."""
        digest = hmac.new(self._secret, f"asyncnb-key:{key_id}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def signing_from_env() -> KeySigning | None:
    text = os.environ.get(SIGNING_SECRET_ENV, "")
    return KeySigning(text) if text else None
