"""The SigV4 verifier (gateway/compat/sagemaker_sigv4.py) against botocore's own signer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from asyncnb.gateway.compat.sagemaker_sigv4 import (
    SignatureRefused,
    SignedRequest,
    check_request,
    matching_secret,
    parse_authorization,
)

SECRET = "s3cr3t-s3cr3t-s3cr3t"
PATH = "/compat/sagemaker/endpoints/double/async-invocations"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def signed(
    secret: str = SECRET,
    path: str = PATH,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    when: datetime = NOW,
) -> SignedRequest:
    """A request as botocore signs it at `when`, as the gateway receives it."""
    given = {
        "X-Amzn-SageMaker-InputLocation": "s3://bucket/in.json",
        "Content-Type": "application/x-amz-json-1.1",
        **(headers or {}),
    }
    request = AWSRequest("POST", f"http://gw.test:8000{path}?b=2&a=1", data=body, headers=given)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        SigV4Auth(Credentials("0123456789abcdef", secret), "sagemaker", "us-east-1").add_auth(
            request
        )
    sent = [("host", "gw.test:8000"), *((k, str(v)) for k, v in request.headers.items())]
    return SignedRequest("POST", path, "b=2&a=1", sent, body)


def verify(request: SignedRequest, secret: str = SECRET, now: datetime = NOW) -> bool:
    credential = parse_authorization(request.values("authorization")[0])
    check_request(request, credential, "sagemaker", now)
    return matching_secret(request, credential, ["other", secret]) == 1


def with_header(request: SignedRequest, name: str, value: str | None) -> SignedRequest:
    headers = [(k, v) for k, v in request.headers if k.lower() != name]
    if value is not None:
        headers.append((name, value))
    return SignedRequest(request.method, request.raw_path, request.raw_query, headers, request.body)


def test_a_botocore_signature_verifies_with_its_secret_only() -> None:
    request = signed(body=b'{"n": 1}')
    assert verify(request)
    credential = parse_authorization(request.values("authorization")[0])
    assert credential.access_key_id == "0123456789abcdef" and credential.region == "us-east-1"
    assert matching_secret(request, credential, ["wrong"]) is None


def test_a_tampered_header_path_query_or_body_fails() -> None:
    request = signed(body=b"{}")
    location = with_header(request, "x-amzn-sagemaker-inputlocation", "s3://bucket/other.json")
    assert not verify(location)
    assert not verify(SignedRequest("POST", PATH + "x", "b=2&a=1", request.headers, b"{}"))
    assert not verify(SignedRequest("POST", PATH, "a=2", request.headers, b"{}"))
    assert not verify(SignedRequest("POST", PATH, "b=2&a=1", request.headers, b"{1}"))
    assert not verify(SignedRequest("PUT", PATH, "b=2&a=1", request.headers, b"{}"))
    assert not verify(with_header(request, "host", "evil.test"))


def test_an_unsigned_amz_header_or_a_missing_signed_one_is_refused() -> None:
    request = signed()
    added = with_header(request, "x-amzn-sagemaker-inference-id", "sneaked-in")
    with pytest.raises(SignatureRefused, match="not signed"):
        verify(added)
    with pytest.raises(SignatureRefused, match="not sent"):
        verify(with_header(request, "content-type", None))


def test_the_date_must_lie_within_fifteen_minutes() -> None:
    request = signed()
    assert verify(request, now=NOW + timedelta(minutes=14))
    with pytest.raises(SignatureRefused, match="expired"):
        verify(request, now=NOW + timedelta(minutes=16))
    with pytest.raises(SignatureRefused, match="expired"):
        verify(request, now=NOW - timedelta(minutes=16))


def test_a_content_sha256_must_be_the_bodys() -> None:
    good = signed(body=b"abc", headers={"X-Amz-Content-SHA256": "0" * 64})
    with pytest.raises(SignatureRefused, match="SHA-256"):
        verify(good)


def test_malformed_authorization_headers_are_refused() -> None:
    for header in (
        "Bearer x",
        "AWS4-HMAC-SHA256 Credential=a/20240501/us-east-1/sagemaker/aws4_request",
        "AWS4-HMAC-SHA256 Credential=a/2024/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=a/20240501/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=x-amz-date;host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=a/20240501/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=nothex",
    ):
        with pytest.raises(SignatureRefused):
            parse_authorization(header)


def test_host_and_date_must_be_signed_and_the_service_must_be_sagemaker() -> None:
    request = signed()
    credential = parse_authorization(request.values("authorization")[0])
    with pytest.raises(SignatureRefused, match="service"):
        check_request(request, credential, "s3", NOW)
    no_host = credential.__class__(
        credential.access_key_id,
        credential.date,
        credential.region,
        credential.service,
        tuple(h for h in credential.signed_headers if h != "host"),
        credential.signature,
    )
    with pytest.raises(SignatureRefused, match="'host' must be signed"):
        check_request(request, no_host, "sagemaker", NOW)
    with pytest.raises(SignatureRefused):
        check_request(with_header(request, "x-amz-date", None), credential, "sagemaker", NOW)
