"""AWS Signature Version 4 (`AWS4-HMAC-SHA256` in `Authorization`), checked as AWS does.

Framework-free: a `SignedRequest` is what came over the wire (the raw path and query, the
headers, the body). The canonical request, the string to sign and the signing key follow
AWS's specification, in the form botocore's `SigV4Auth` signs (which the tests sign with).
A signature is refused unless `host`, `x-amz-date` and every `x-amz-*` / `x-amzn-*` header
sent are signed, `x-amz-date` lies within `MAX_SKEW_S` of now and is the credential's date,
and a sent `x-amz-content-sha256` is the body's SHA-256. Signatures are compared in constant
time; no secret is ever part of an error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_CREDENTIAL = re.compile(
    r"(?P<id>[^/\s]{1,128})/(?P<date>[0-9]{8})/(?P<region>[a-z0-9-]{1,32})/"
    r"(?P<service>[a-z0-9-]{1,32})/aws4_request"
)
_SIGNED_HEADERS = re.compile(r"[a-z0-9-]+(;[a-z0-9-]+)*")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class SignatureRefused(Exception):
    """Why a signature is not accepted, with the AWS error code that says so."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # as sent: percent-encoded
    raw_query: str
    headers: Sequence[tuple[str, str]]  # as sent, in order; names in any case
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def is_sigv4(authorization: str) -> bool:
    return authorization.strip().startswith(ALGORITHM + " ")


def parse_authorization(authorization: str) -> Credential:
    """The parts of an `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`."""
    if not is_sigv4(authorization):
        raise SignatureRefused("IncompleteSignature", f"Authorization must use {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in authorization.strip()[len(ALGORITHM) :].split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name in fields:
            raise SignatureRefused("IncompleteSignature", "malformed SigV4 Authorization header")
        fields[name] = value.strip()
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if f not in fields]
    if missing or len(fields) != 3:
        raise SignatureRefused(
            "IncompleteSignature",
            "the SigV4 Authorization header needs Credential, SignedHeaders and Signature",
        )
    credential = _CREDENTIAL.fullmatch(fields["Credential"])
    if credential is None:
        raise SignatureRefused(
            "IncompleteSignature",
            "Credential must read <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request",
        )
    if not _SIGNED_HEADERS.fullmatch(fields["SignedHeaders"]):
        raise SignatureRefused("IncompleteSignature", "malformed SignedHeaders")
    if not _SIGNATURE.fullmatch(fields["Signature"]):
        raise SignatureRefused("IncompleteSignature", "Signature must be 64 hex digits")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if list(signed) != sorted(set(signed)):
        raise SignatureRefused("IncompleteSignature", "SignedHeaders must be sorted and unique")
    return Credential(
        credential["id"],
        credential["date"],
        credential["region"],
        credential["service"],
        signed,
        fields["Signature"],
    )


def check_request(
    request: SignedRequest, credential: Credential, service: str, now: datetime
) -> None:
    """What must hold whatever the secret: the service, the headers signed, the date, the
    payload hash."""
    if credential.service != service:
        raise SignatureRefused(
            "InvalidSignatureException", f"the credential's service must be {service!r}"
        )
    signed = set(credential.signed_headers)
    for needed in ("host", "x-amz-date"):
        if needed not in signed:
            raise SignatureRefused("InvalidSignatureException", f"{needed!r} must be signed")
    unsigned = sorted(
        n for n in request.names() if n.startswith(("x-amz-", "x-amzn-")) and n not in signed
    )
    if unsigned:
        raise SignatureRefused(
            "InvalidSignatureException", f"headers sent but not signed: {', '.join(unsigned)}"
        )
    absent = sorted(signed - request.names())
    if absent:
        raise SignatureRefused(
            "InvalidSignatureException", f"signed headers not sent: {', '.join(absent)}"
        )
    dates = request.values("x-amz-date")
    try:
        when = datetime.strptime(dates[0], _AMZ_DATE).replace(tzinfo=timezone.utc)
    except ValueError:
        raise SignatureRefused(
            "IncompleteSignature", "X-Amz-Date must read YYYYMMDDTHHMMSSZ"
        ) from None
    if len(dates) != 1 or dates[0][:8] != credential.date:
        raise SignatureRefused(
            "InvalidSignatureException", "X-Amz-Date must be one date, the credential's"
        )
    if abs((now - when).total_seconds()) > MAX_SKEW_S:
        raise SignatureRefused(
            "InvalidSignatureException",
            f"Signature expired: X-Amz-Date {dates[0]} is more than {MAX_SKEW_S // 60} minutes "
            "from the gateway's time",
        )
    declared = request.values("x-amz-content-sha256")
    if declared and declared != [payload_hash(request.body)]:
        raise SignatureRefused(
            "InvalidSignatureException", "X-Amz-Content-SHA256 is not the body's SHA-256"
        )


def payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _remove_dot_segments(path: str) -> str:
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in (".", ""):
            kept.append(segment)
    normalized = "/" + "/".join(kept)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return normalized


def canonical_uri(raw_path: str) -> str:
    """The path as botocore signs it: dot segments removed, then percent-encoded again."""
    return quote(_remove_dot_segments(raw_path or "/"), safe="/~")


def canonical_query(raw_query: str) -> str:
    if not raw_query:
        return ""
    pairs = [pair.partition("=") for pair in raw_query.split("&")]
    return "&".join(f"{k}={v}" for k, v in sorted((k, v) for k, _, v in pairs))


def canonical_headers(request: SignedRequest, names: Iterable[str]) -> str:
    lines = []
    for name in names:
        value = ",".join(" ".join(v.split()) for v in request.values(name))
        lines.append(f"{name}:{value}")
    return "\n".join(lines) + "\n"


def canonical_request(request: SignedRequest, credential: Credential) -> str:
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.raw_path),
            canonical_query(request.raw_query),
            canonical_headers(request, credential.signed_headers),
            ";".join(credential.signed_headers),
            payload_hash(request.body),
        ]
    )


def string_to_sign(request: SignedRequest, credential: Credential) -> str:
    digest = hashlib.sha256(canonical_request(request, credential).encode()).hexdigest()
    return "\n".join([ALGORITHM, request.values("x-amz-date")[0], credential.scope, digest])


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signature(request: SignedRequest, credential: Credential, secret: str) -> str:
    key = _hmac(f"AWS4{secret}".encode(), credential.date)
    for part in (credential.region, credential.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign(request, credential).encode(), hashlib.sha256).hexdigest()


def matching_secret(
    request: SignedRequest, credential: Credential, secrets: Sequence[str]
) -> int | None:
    """The index of the secret in `secrets` that made the signature, or None. Every one is
    tried, so the time taken says nothing of which came close."""
    found: int | None = None
    for index, secret in enumerate(secrets):
        expected = signature(request, credential, secret)
        if hmac.compare_digest(expected, credential.signature) and found is None:
            found = index
    return found
