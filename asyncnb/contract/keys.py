"""API keys as every side sees them: their format, their scopes, and who a caller is.

A key reads `ank_<id>_<secret>`: `id` (16 hex digits) names the key in listings, logs and
`DELETE /keys/{id}`; `secret` (43 URL-safe characters, 256 random bits) is shown once, when the
key is created, and the gateway keeps only its hash. The Jupyter extension tells a key from a
Jupyter token by this format alone, and hands it to the gateway, which decides.
"""

from __future__ import annotations

import re
import shlex
from enum import Enum

KEY_PREFIX = "ank_"
KEY_ID_PATTERN = r"[0-9a-f]{16}"
KEY_PATTERN = rf"{KEY_PREFIX}(?P<id>{KEY_ID_PATTERN})_(?P<secret>[A-Za-z0-9_-]{{43}})"
_KEY = re.compile(KEY_PATTERN)
_KEY_ID = re.compile(KEY_ID_PATTERN)
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")

# What tokens (not keys) submit as: the people who run the gateway.
OWNER = "owner"
ALL_APIS = "*"


class Scope(str, Enum):
    INVOKE = "invoke"  # submit; status, result and cancel of its own workloads
    READ = "read"  # the API's status and its recent workloads


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(text.strip())
    return (match["id"], match["secret"]) if match else None


def looks_like_key(credential: str) -> bool:
    """Whether an `Authorization` header (or a bare credential) carries an asyncnb key."""
    scheme, _, value = credential.strip().partition(" ")
    candidate = value if value else scheme
    if value and scheme.lower() not in ("bearer", "token"):
        return False
    return parse_key(candidate) is not None


def is_key_id(value: str) -> bool:
    return bool(_KEY_ID.fullmatch(value))


def key_name_problem(name: str) -> str | None:
    """Why `name` cannot name a key (it is what `submitted_by` shows), or None."""
    if name == OWNER:
        return f"key name {OWNER!r} is reserved for the gateway's tokens"
    if not _KEY_NAME.fullmatch(name):
        return (
            f"invalid key name {name[:80]!r}: use 1-64 letters, digits and . _ @ + -, "
            "starting with a letter or digit"
        )
    return None


def curl_lines(endpoint: str, key_variable: str = "ASYNCNB_KEY") -> list[str]:
    """How a colleague calls `endpoint` with a key kept in `$key_variable`: submit, then wait
    for the status record (the same lines the notebook, the CLI and the Jupyter page show)."""
    auth = f'-H "Authorization: Bearer ${key_variable}"'
    return [
        f"curl -s -X POST {shlex.quote(endpoint)} {auth} "
        "-H 'Content-Type: application/json' --data-binary @payload.json",
        f"curl -s {shlex.quote(endpoint + '/ID')} {auth} -H 'Prefer: wait=30'",
    ]


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """A key's lifetime as typed by people: '90' (seconds), '30m', '12h', '7d' → seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r}: use seconds, or a number with s, m, h or d") from None
    if not seconds > 0:
        raise ValueError(f"{text!r}: must be positive")
    return seconds
