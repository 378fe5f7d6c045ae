"""The small shared rules of the contract: error records, states, deploy option flags, payload
checks, and the name patterns other routers reuse."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from asyncnb.contract.names import (
    API_NAME_PATTERN,
    RESERVED_NAMES,
    WORKLOAD_ID_PATTERN,
    api_name_problem,
    is_workload_id,
    new_workload_id,
    workload_id_problem,
)
from asyncnb.contract.options import (
    APIOptions,
    chosen_options,
    option_flags,
    parse_option_value,
)
from asyncnb.contract.predictor import (
    BYTES_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    decode_payload,
    encode_payload,
    payload_problem,
)
from asyncnb.contract.status import APIPhase, Status
from asyncnb.contract.tasks import MAX_ERROR_MESSAGE, MAX_ERROR_TRACEBACK, error_record

# error_record ---------------------------------------------------------------------------------


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_error_record_of_a_raised_exception() -> None:
    record = error_record(_raised(KeyError("weights")))
    assert record["type"] == "KeyError"
    assert record["message"] == "'weights'"
    assert record["traceback"].startswith("Traceback (most recent call last)")
    assert "_raised" in record["traceback"]
    assert record["traceback"].rstrip().endswith("KeyError: 'weights'")


def test_error_record_bounds_the_message() -> None:
    record = error_record(ValueError("x" * (MAX_ERROR_MESSAGE + 500)))
    assert MAX_ERROR_MESSAGE == 4000
    assert record["message"] == "x" * MAX_ERROR_MESSAGE


def test_error_record_keeps_the_end_of_a_long_traceback() -> None:
    """The end of a traceback says what failed; the start is the least useful part."""
    text = "START" + "." * MAX_ERROR_TRACEBACK + "ValueError: the end"
    record = error_record(ValueError("the end"), traceback_text=text)
    assert MAX_ERROR_TRACEBACK == 20_000
    assert len(record["traceback"]) == MAX_ERROR_TRACEBACK
    assert record["traceback"].endswith("ValueError: the end")
    assert "START" not in record["traceback"]


def test_error_record_uses_the_given_type_name_and_traceback() -> None:
    record = error_record(RuntimeError("boom"), "PredictorInitError", "remote traceback")
    assert record == {
        "type": "PredictorInitError",
        "message": "boom",
        "traceback": "remote traceback",
    }
    # an empty given traceback is still the given one, not the local one
    assert error_record(RuntimeError("boom"), traceback_text="")["traceback"] == ""


def test_error_record_of_an_exception_never_raised() -> None:
    record = error_record(TimeoutError())
    assert record["type"] == "TimeoutError"
    assert record["message"] == ""
    assert record["traceback"].strip() == "TimeoutError"
    json.dumps(record)  # plain data, for the wire and the status record


# status ---------------------------------------------------------------------------------------


def test_finished_states() -> None:
    finished = {status for status in Status if status.finished}
    assert finished == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}


def test_states_are_spelled_as_the_http_api_spells_them() -> None:
    assert [s.value for s in Status] == [
        "in_queue",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
    ]
    assert [p.value for p in APIPhase] == ["deploying", "ready", "error", "waiting_for_resources"]
    assert Status("completed") is Status.COMPLETED
    assert json.dumps({"s": Status.FAILED, "p": APIPhase.READY}) == '{"s": "failed", "p": "ready"}'


# deploy option flags --------------------------------------------------------------------------


def test_one_dashed_flag_per_option() -> None:
    flags = option_flags()
    assert [name for _, name, _ in flags] == list(APIOptions.model_fields)
    for flag, name, help_text in flags:
        assert flag == "--" + name.replace("_", "-")
        assert help_text == APIOptions.model_fields[name].description
    assert ("--max-batch-size", "max_batch_size") in [(f, n) for f, n, _ in flags]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("1.5", 1.5),
        ("-2", -2),
        ("true", True),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ('"quoted"', "quoted"),
        ("4GiB", "4GiB"),
        ("https://hooks.example/x", "https://hooks.example/x"),
        ("", ""),
    ],
)
def test_parse_option_value(text: str, value: Any) -> None:
    assert parse_option_value(text) == value


def test_chosen_options_parse_given_ones_and_skip_the_rest() -> None:
    chosen = chosen_options(
        {
            "gpu": "1",
            "mem": "4GiB",
            "timeout_s": None,
            "webhook_url": "https://hooks.example/x",
            "not_an_option": "5",
            "token": "secret",
        }
    )
    assert chosen == {"gpu": 1, "mem": "4GiB", "webhook_url": "https://hooks.example/x"}
    assert APIOptions(**chosen).mem == 4 * 1024**3


def test_chosen_options_of_nothing() -> None:
    assert chosen_options({}) == {}
    assert chosen_options(dict.fromkeys(APIOptions.model_fields)) == {}


# payloads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "content_type", "expected"),
    [
        ({"a": 1}, None, (b'{"a": 1}', JSON_TYPE)),
        ([1, 2], None, (b"[1, 2]", JSON_TYPE)),
        (None, None, (b"null", JSON_TYPE)),
        ("hi", None, (b"hi", TEXT_TYPE)),
        ("żółw", "text/csv", ("żółw".encode(), "text/csv")),
        ("hi", JSON_TYPE, (b'"hi"', JSON_TYPE)),
        (b"\x00\xff", None, (b"\x00\xff", BYTES_TYPE)),
        (bytearray(b"ab"), "image/png", (b"ab", "image/png")),
        (memoryview(b"mv"), None, (b"mv", BYTES_TYPE)),
    ],
)
def test_encode_payload(payload: Any, content_type: str | None, expected: Any) -> None:
    body, chosen_type = encode_payload(payload, content_type)
    assert (body, chosen_type) == expected
    assert type(body) is bytes
    assert payload_problem(body, chosen_type) is None


@pytest.mark.parametrize("payload", [{"a": [1, None]}, "text", b"\x89PNG", 0, ""])
def test_encoded_payloads_decode_to_themselves(payload: Any) -> None:
    assert decode_payload(*encode_payload(payload, None)) == payload


@pytest.mark.parametrize(
    ("data", "content_type", "fragment"),
    [
        (b"", "application/json", "empty body"),
        (b"  \n", "application/json; charset=utf-8", "empty body"),
        (b"", "application/problem+json", "empty body"),
        (b"{", "application/json", "malformed JSON"),
        (b"{'a': 1}", "Application/JSON", "malformed JSON"),
        (b"\xff", "application/json", "malformed JSON"),
        (b"NaN-ish", "application/vnd.x+json", "malformed JSON"),
        (b"abc", "text/plain; charset=no-such-charset", "unknown charset 'no-such-charset'"),
        (b"\xff\xfe\xfd", "text/plain", "not valid utf-8 text"),
        (b"\xc3", "text/csv; charset=utf-8", "not valid utf-8 text"),
    ],
)
def test_payload_problems(data: bytes, content_type: str, fragment: str) -> None:
    problem = payload_problem(data, content_type)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"null", "application/json"),
        (b' {"a": 1} ', "application/json; charset=utf-8"),
        (b"\xff", "text/plain; charset=latin-1"),
        (b"\xff", 'text/plain; Charset="latin-1"'),
        (b"", "text/plain"),
        (b"\xff\x00 anything", "application/octet-stream"),
        (b"", "application/octet-stream"),
        (b"{", "image/png"),
        (b"{", ""),
    ],
)
def test_acceptable_payloads(data: bytes, content_type: str) -> None:
    assert payload_problem(data, content_type) is None


# names ----------------------------------------------------------------------------------------

NAME_EXAMPLES = [
    "a",
    "z",
    "0",
    "iris",
    "my-model",
    "my-model-2",
    "a-b-c",
    "9lives",
    "x" * 63,
    "a" + "-" * 61 + "b",
    "x" * 64,
    "",
    "-a",
    "a-",
    "-",
    "A",
    "Iris",
    "my_model",
    "my.model",
    "my model",
    "a\n",
    "\na",
    "ü",
    "a/b",
    "..",
    "apis",
    "healthz",
    "metrics",
    "docs",
    "redoc",
    "openapi.json",
    "apis2",
]

ID_EXAMPLES = [
    "0" * 32,
    "f" * 32,
    "0123456789abcdef0123456789abcdef",
    new_workload_id(),
    "0" * 31,
    "0" * 33,
    "F" * 32,
    "g" * 32,
    "0123456789ABCDEF0123456789abcdef",
    "0" * 32 + "\n",
    " " + "0" * 31,
    "",
    "01234567-89ab-cdef-0123-456789abcdef",
]


def test_api_name_pattern_agrees_with_api_name_problem() -> None:
    """Other routers match the pattern text; only the reserved names are the function's own."""
    for name in NAME_EXAMPLES:
        matches = re.fullmatch(API_NAME_PATTERN, name) is not None
        valid = api_name_problem(name) is None
        if name in RESERVED_NAMES:
            assert not valid, name
        else:
            assert matches == valid, name
    assert sum(api_name_problem(name) is None for name in NAME_EXAMPLES) == 11


def test_workload_id_pattern_agrees_with_is_workload_id() -> None:
    for value in ID_EXAMPLES:
        matches = re.fullmatch(WORKLOAD_ID_PATTERN, value) is not None
        assert matches == is_workload_id(value), value
        assert (workload_id_problem(value) is None) == is_workload_id(value), value
    assert sum(is_workload_id(value) for value in ID_EXAMPLES) == 4


def test_patterns_compose_into_a_route() -> None:
    route = re.compile(f"/(?P<api>{API_NAME_PATTERN})/(?P<id>{WORKLOAD_ID_PATTERN})")
    workload_id = new_workload_id()
    found = route.fullmatch(f"/my-api/{workload_id}")
    assert found is not None and found.group("api", "id") == ("my-api", workload_id)
    assert route.fullmatch(f"/my-api/{workload_id}/result") is None
    assert route.fullmatch(f"/My-Api/{workload_id}") is None


def test_workload_id_problem_names_the_value_briefly() -> None:
    problem = workload_id_problem("z" * 500)
    assert problem is not None
    assert "expected 32 hex digits" in problem
    assert "z" * 80 in problem and "z" * 81 not in problem
    assert workload_id_problem(new_workload_id()) is None


@pytest.mark.parametrize("content_type", ["Text/Plain", "TEXT/CSV; charset=utf-8"])
def test_text_goes_as_text_whatever_the_case_of_its_media_type(content_type: str) -> None:
    assert encode_payload("hi", content_type) == (b"hi", content_type)
