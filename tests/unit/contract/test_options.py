"""APIOptions (Cortex's defaults, validation) and the webhook destination policy."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from asyncnb.contract.options import (
    DEFAULT_RESULT_TTL_S,
    EXAMPLE_MAX_BYTES,
    SCALING_OPTIONS,
    APIOptions,
)
from asyncnb.contract.webhook_policy import webhook_url_problem
from asyncnb.webhooks import generate_secret

# defaults ---------------------------------------------------------------------------------------


def test_defaults_equal_cortex() -> None:
    options = APIOptions()
    assert options.min_replicas == 1
    assert options.max_replicas == 100
    assert options.init_replicas is None
    assert options.window == 60
    assert options.upscale_stabilization_period == 60
    assert options.downscale_stabilization_period == 300
    assert options.max_upscale_factor == 1.5
    assert options.max_downscale_factor == 0.75
    assert options.upscale_tolerance == 0.05
    assert options.downscale_tolerance == 0.05
    assert options.max_concurrency == 1
    assert options.max_batch_size == 1
    assert options.result_ttl == DEFAULT_RESULT_TTL_S == 7 * 24 * 3600
    assert options.gpu == 0
    assert options.webhook_url is None
    assert options.webhook_secret is None


def test_effective_target_in_flight_defaults_to_max_concurrency() -> None:
    assert APIOptions().effective_target_in_flight == 1.0
    assert APIOptions(max_concurrency=4).effective_target_in_flight == 4.0
    assert APIOptions(max_concurrency=4, target_in_flight=2.5).effective_target_in_flight == 2.5


# validation -------------------------------------------------------------------------------------


def _error_text(**kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        APIOptions(**kwargs)
    return str(info.value)


def _error_locs(**kwargs: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        APIOptions(**kwargs)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_min_replicas_above_max_is_refused() -> None:
    assert "min_replicas must not exceed max_replicas" in _error_text(
        min_replicas=5, max_replicas=2
    )


def test_init_replicas_outside_bounds_is_refused() -> None:
    assert "init_replicas" in _error_text(min_replicas=2, max_replicas=4, init_replicas=5)
    assert APIOptions(min_replicas=2, max_replicas=4, init_replicas=3).init_replicas == 3


def test_unknown_field_is_refused() -> None:
    assert _error_locs(max_replica=3) == [("max_replica",)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_downscale_factor", 1),
        ("max_downscale_factor", 0),
        ("max_upscale_factor", 1),
        ("gpu", -1),
        ("cpu", 0),
        ("max_concurrency", 0),
        ("max_batch_size", 0),
        ("timeout_s", 0),
        ("result_ttl", 0),
        ("window", 0),
        ("upscale_tolerance", 1.5),
        ("min_replicas", -1),
    ],
)
def test_out_of_range_values_name_the_field(field: str, value: Any) -> None:
    assert _error_locs(**{field: value}) == [(field,)]


@pytest.mark.parametrize(
    "secret",
    [
        "not-a-secret",
        "whsec_!!!not base64!!!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_bad_webhook_secret_is_refused(secret: str) -> None:
    assert _error_locs(webhook_secret=secret) == [("webhook_secret",)]


def test_generated_secret_is_accepted() -> None:
    secret = generate_secret()
    assert APIOptions(webhook_secret=secret).webhook_secret == secret


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_bad_webhook_url_is_refused(url: str) -> None:
    assert _error_locs(webhook_url=url) == [("webhook_url",)]


def test_good_webhook_url_is_kept() -> None:
    url = "http://127.0.0.1:8080/hook"
    assert APIOptions(webhook_url=url).webhook_url == url


# conversions ------------------------------------------------------------------------------------


def test_mem_parses_sizes() -> None:
    assert APIOptions(mem="4GiB").mem == 4 * 1024**3
    assert APIOptions(mem="500MB").mem == 500_000_000
    assert APIOptions(mem=1234).mem == 1234


def test_mem_garbage_is_refused() -> None:
    assert _error_locs(mem="four gigs") == [("mem",)]
    assert _error_locs(mem="-1GiB") == [("mem",)]


def test_dask_resources() -> None:
    assert APIOptions().dask_resources() == {}
    assert APIOptions(gpu=1, cpu=2, mem="1GiB").dask_resources() == {
        "GPU": 1.0,
        "CPU": 2.0,
        "MEMORY": float(1024**3),
    }
    assert APIOptions(gpu=0.5).dask_resources() == {"GPU": 0.5}


def test_public_hides_the_secret() -> None:
    secret = generate_secret()
    shown = APIOptions(webhook_secret=secret, webhook_url="https://example.com/h").public()
    assert shown["webhook_secret"] == "***"
    assert shown["webhook_url"] == "https://example.com/h"
    assert secret not in json.dumps(shown)
    assert APIOptions().public()["webhook_secret"] is None


def test_public_is_json_serializable_and_complete() -> None:
    shown = APIOptions(max_replicas=7).public()
    assert json.loads(json.dumps(shown))["max_replicas"] == 7
    assert set(shown) == set(APIOptions.model_fields)


# webhook_policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]:8000/hook",
        "https://hooks.example.com/a?b=c",
        "http://10.0.0.5/internal",
    ],
)
def test_allowed_webhook_urls(url: str) -> None:
    assert webhook_url_problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.1/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://metadata.google.internal/",
        "http://METADATA/",
        "http://instance-data/latest",
    ],
)
def test_denied_webhook_addresses(url: str) -> None:
    assert webhook_url_problem(url) is not None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///tmp/x", "gopher://example.com/", "example.com/hook"]
)
def test_non_http_schemes_denied(url: str) -> None:
    assert webhook_url_problem(url) == "webhook URL must use http or https"


def test_missing_host_denied() -> None:
    assert webhook_url_problem("http:///path") == "webhook URL has no host"


def test_overly_long_url_denied() -> None:
    url = "https://example.com/" + "a" * 2100
    problem = webhook_url_problem(url)
    assert problem is not None and "2048" in problem
    assert webhook_url_problem("https://example.com/" + "a" * 1000) is None


def test_malformed_url_denied() -> None:
    assert webhook_url_problem("http://[::1/hook") is not None


def test_ipv4_mapped_metadata_address_denied() -> None:
    assert webhook_url_problem("http://[::ffff:169.254.169.254]/latest") is not None


@pytest.mark.parametrize(
    "host", ["2852039166", "0xa9fea9fe", "169.254.43518", "0251.0376.0251.0376"]
)
def test_alternate_ipv4_forms_of_metadata_denied(host: str) -> None:
    assert webhook_url_problem(f"http://{host}/latest") is not None


def test_trailing_dot_metadata_host_denied() -> None:
    assert webhook_url_problem("http://metadata.google.internal./computeMetadata/v1/") is not None


# the example payload, and scaling changes ------------------------------------------------------


def test_example_is_any_json_value_up_to_64_kib() -> None:
    assert APIOptions().example is None
    for value in ({"text": "good"}, [1, 2], "hello", 3.5, True):
        assert APIOptions(example=value).example == value
        assert APIOptions(example=value).public()["example"] == value
    assert APIOptions(example="x" * (EXAMPLE_MAX_BYTES - 2)).example  # 64 KiB with the quotes
    assert "at most 65536 allowed" in _error_text(example="x" * EXAMPLE_MAX_BYTES)
    assert "must be a JSON value" in _error_text(example={"n": float("nan")})
    assert "must be a JSON value" in _error_text(example={1, 2})


def test_with_scaling_changes_only_scaling_options_and_validates_the_result() -> None:
    options = APIOptions(max_concurrency=3, max_replicas=4, example={"a": 1})
    changed = options.with_scaling({"min_replicas": 0, "max_replicas": 2})
    assert (changed.min_replicas, changed.max_replicas) == (0, 2)
    assert changed.max_concurrency == 3 and changed.example == {"a": 1}  # the rest is kept
    assert options.max_replicas == 4  # a new object
    assert set(SCALING_OPTIONS) <= set(APIOptions.model_fields)
    with pytest.raises(ValidationError, match="min_replicas must not exceed max_replicas"):
        options.with_scaling({"min_replicas": 5})
    with pytest.raises(ValidationError):
        options.with_scaling({"max_upscale_factor": 0.5})
    with pytest.raises(ValueError, match="not a scaling option: example, gpu"):
        options.with_scaling({"gpu": 1, "example": None, "min_replicas": 0})
