"""API keys: who may call which APIs, kept in the storage as hashes, and their rate limits.

A key's secret is shown once, when it is created; the storage holds a salted SHA-256 of it
(256 random bits need no slow hash: there is nothing to guess). Checking a key compares hashes
in constant time, and an unknown id is compared against a dummy hash, so timing tells nothing
about which ids exist. Revoking writes `revoked_at`: the record stays, for the listing and for
a clear 401, and the key stops working at once (the gateway holds the keys in memory; one
gateway serves a storage at a time).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..contract.keys import ALL_APIS, KEY_PREFIX, Scope, is_key_id, parse_key
from ..contract.timestamps import isoformat
from ..storage import Storage
from .key_signing import KeySigning

logger = logging.getLogger(__name__)
_DUMMY_SALT = secrets.token_hex(16)
_DUMMY_HASH = hashlib.sha256(b"").hexdigest()


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


@dataclass
class TokenBucket:
    """`rate` requests a second on average, up to `burst` at once."""

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """0 when a request may go now (and counts it), else the seconds until one may."""
        if self.tokens < 0:
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class APIKey:
    id: str
    name: str
    apis: tuple[str, ...]
    scopes: frozenset[Scope]
    salt: str
    hash: str
    created_at: float
    expires_at: float | None = None
    rate_limit: float | None = None
    burst: int | None = None
    max_queued: int | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    sigv4: bool = False  # its secret is derived (key_signing.py): it may sign SigV4 requests
    bucket: TokenBucket | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate_limit is not None:
            burst = self.burst or max(1, math.ceil(self.rate_limit))
            self.bucket = TokenBucket(self.rate_limit, burst)

    def allows_api(self, api: str) -> bool:
        return ALL_APIS in self.apis or api in self.apis

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    @property
    def prefix(self) -> str:
        """What identifies the key in listings: its public part, never the secret."""
        return f"{KEY_PREFIX}{self.id}_"

    def record(self) -> dict[str, Any]:
        """The stored form: a hash, never the secret."""
        extra = {"sigv4": True} if self.sigv4 else {}
        return {
            "id": self.id,
            "name": self.name,
            "apis": list(self.apis),
            "scopes": sorted(s.value for s in self.scopes),
            "salt": self.salt,
            "hash": self.hash,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "rate_limit": self.rate_limit,
            "burst": self.burst,
            "max_queued": self.max_queued,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            **extra,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> APIKey:
        return cls(
            id=record["id"],
            name=record["name"],
            apis=tuple(record["apis"]),
            scopes=frozenset(Scope(s) for s in record["scopes"]),
            salt=record["salt"],
            hash=record["hash"],
            created_at=record["created_at"],
            expires_at=record.get("expires_at"),
            rate_limit=record.get("rate_limit"),
            burst=record.get("burst"),
            max_queued=record.get("max_queued"),
            revoked_at=record.get("revoked_at"),
            last_used_at=record.get("last_used_at"),
            sigv4=bool(record.get("sigv4")),
        )

    def public(self, now: float | None = None) -> dict[str, Any]:
        """What `GET /keys` shows of it."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "apis": list(self.apis),
            "scopes": sorted(s.value for s in self.scopes),
            "state": self.state(time.time() if now is None else now),
            "created_at": isoformat(self.created_at),
            "expires_at": isoformat(self.expires_at),
            "last_used_at": isoformat(self.last_used_at),
            "revoked_at": isoformat(self.revoked_at),
            "rate_limit": self.rate_limit,
            "burst": self.bucket.burst if self.bucket else None,
            "max_queued": self.max_queued,
        }


class KeyRefused(Exception):
    """A key that names nobody (any more): the gateway answers 401 with this reason."""


class KeyRing:
    """The keys of one gateway, loaded from storage at start and written through on change."""

    def __init__(self, storage: Storage, signing: KeySigning | None = None) -> None:
        self.storage = storage
        # with it, new keys' secrets are derived from their ids, so they can sign SigV4
        self.signing = signing
        self._keys: dict[str, APIKey] = {}
        self._used: set[str] = set()  # keys whose last_used_at is not stored yet

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Any:
        return iter(sorted(self._keys.values(), key=lambda k: k.created_at))

    def load(self) -> None:
        for name in self.storage.list_names(self.storage.keys_dir()):
            key_id = name.removesuffix(".json")
            if not is_key_id(key_id):
                continue
            record = self.storage.read_json(self.storage.key_path(key_id))
            try:
                key = APIKey.from_record(record)
            except (KeyError, TypeError, ValueError):
                logger.warning("ignoring an unreadable key record %s", key_id)
                continue
            self._keys[key.id] = key

    def get(self, key_id: str) -> APIKey | None:
        return self._keys.get(key_id)

    def new(
        self,
        name: str,
        apis: Iterable[str],
        scopes: Iterable[Scope],
        *,
        expires_in_s: float | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        max_queued: int | None = None,
        now: float | None = None,
    ) -> tuple[APIKey, str]:
        """A key and its full text (shown once); not kept until `save`."""
        now = time.time() if now is None else now
        key_id = secrets.token_hex(8)
        while key_id in self._keys:
            key_id = secrets.token_hex(8)
        secret = self.signing.secret_of(key_id) if self.signing else secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        key = APIKey(
            id=key_id,
            name=name,
            apis=tuple(dict.fromkeys(apis)),
            scopes=frozenset(scopes),
            salt=salt,
            hash=_digest(salt, secret),
            created_at=now,
            expires_at=None if expires_in_s is None else now + expires_in_s,
            rate_limit=rate_limit,
            burst=burst,
            max_queued=max_queued,
            sigv4=self.signing is not None,
        )
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    def save(self, key: APIKey) -> None:
        self.storage.write_json(self.storage.key_path(key.id), key.record())
        self._keys[key.id] = key

    def check(self, text: str, now: float | None = None) -> APIKey:
        """The key `text` is, if it works now; else KeyRefused with the reason."""
        parsed = parse_key(text)
        if parsed is None:
            raise KeyRefused("malformed API key")
        key_id, secret = parsed
        key = self._keys.get(key_id)
        salt, expected = (key.salt, key.hash) if key else (_DUMMY_SALT, _DUMMY_HASH)
        if not hmac.compare_digest(_digest(salt, secret), expected) or key is None:
            raise KeyRefused("invalid API key")
        now = time.time() if now is None else now
        if key.revoked_at is not None:
            raise KeyRefused(f"API key {key.id} was revoked")
        if key.expired(now):
            raise KeyRefused(f"API key {key.id} expired at {isoformat(key.expires_at)}")
        key.last_used_at = now
        self._used.add(key.id)
        return key

    def signing_text(self, key_id: str) -> str | None:
        """The full text of a key that may sign SigV4 (what its secret was derived to be),
        or None: no such key, one made without a signing secret, or none set now. `check`
        then tells whether it still works (a changed signing secret fails its hash)."""
        key = self._keys.get(key_id)
        if key is None or not key.sigv4 or self.signing is None:
            return None
        return f"{KEY_PREFIX}{key_id}_{self.signing.secret_of(key_id)}"

    def revoked(self, key_id: str, now: float | None = None) -> APIKey | None:
        """The key with `revoked_at` set (not saved yet), or None when there is no such key."""
        key = self._keys.get(key_id)
        if key is None:
            return None
        if key.revoked_at is None:
            key = APIKey.from_record({**key.record(), "revoked_at": now or time.time()})
        return key

    def flush_usage(self) -> int:
        """Store the `last_used_at` of keys used since the last flush; how many were written."""
        used, self._used = self._used, set()
        written = 0
        for key_id in used:
            key = self._keys.get(key_id)
            if key is None:
                continue
            try:
                self.storage.write_json(self.storage.key_path(key.id), key.record())
                written += 1
            except Exception:
                self._used.add(key_id)
                raise
        return written
