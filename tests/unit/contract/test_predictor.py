"""The predictor contract: construction, call signatures, payload decoding, result encoding."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import asyncnb
from asyncnb.contract.predictor import (
    BYTES_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    Predictor,
    build_predictor,
    check_predictor_class,
    decode_payload,
    encode_result,
)

# construction ---------------------------------------------------------------------------------


class PositionalConfig:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def predict(self, payload: Any) -> Any:
        return payload


class RenamedPositionalConfig:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.config = cfg

    def predict(self, payload: Any) -> Any:
        return payload


class SelfOnlyInit:
    def __init__(self) -> None:
        self.built = True

    def predict(self, payload: Any) -> Any:
        return payload


class NoInit:
    def predict(self, payload: Any) -> Any:
        return payload


class KeywordConfig:
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = config

    def predict(self, payload: Any) -> Any:
        return payload


class KeywordOnlyConfig:
    def __init__(self, *, config: dict[str, Any]) -> None:
        self.config = config

    def predict(self, payload: Any) -> Any:
        return payload


def test_init_with_positional_config_gets_config() -> None:
    built = build_predictor(PositionalConfig, {"a": 1})
    assert built.config == {"a": 1}


def test_init_with_differently_named_positional_gets_config() -> None:
    built = build_predictor(RenamedPositionalConfig, {"a": 2})
    assert built.config == {"a": 2}


def test_config_none_becomes_empty_dict() -> None:
    assert build_predictor(PositionalConfig, None).config == {}
    assert build_predictor(KeywordConfig, None).config == {}


def test_init_without_config_is_called_without_arguments() -> None:
    built = build_predictor(SelfOnlyInit, {"ignored": True})
    assert isinstance(built, SelfOnlyInit)
    assert built.built is True


def test_class_without_init_is_built() -> None:
    assert isinstance(build_predictor(NoInit, {"ignored": True}), NoInit)


def test_keyword_config_with_default_is_passed_by_name() -> None:
    assert build_predictor(KeywordConfig, {"k": "v"}).config == {"k": "v"}


def test_keyword_only_config_is_passed_by_name() -> None:
    assert build_predictor(KeywordOnlyConfig, {"k": 1}).config == {"k": 1}


# predict signatures ----------------------------------------------------------------------------


class PayloadOnly:
    def predict(self, payload: Any) -> Any:
        return ("single", payload)


class WithRequestId:
    def predict(self, payload: Any, request_id: str) -> Any:
        return ("single", payload, request_id)


class BatchOnly:
    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        self.calls.append(payloads)
        return [("batch", p) for p in payloads]


class Both:
    def predict(self, payload: Any) -> Any:
        return ("single", payload)

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        return [("batch", p) for p in payloads]


class ShortBatch:
    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        return payloads[:-1]


class KeywordOnlyRequestId:
    def predict(self, payload: Any, *, request_id: str) -> Any:
        return (payload, request_id)


class KwargsPredict:
    def predict(self, payload: Any, **kwargs: Any) -> Any:
        return (payload, kwargs.get("request_id"))


def test_predict_payload_only() -> None:
    wrapped = Predictor.wrap(PayloadOnly())
    assert wrapped.has_single and not wrapped.has_batch
    assert wrapped.takes_request_id is False
    assert wrapped.predict({"x": 1}, "rid") == ("single", {"x": 1})


def test_predict_with_request_id() -> None:
    wrapped = Predictor.wrap(WithRequestId())
    assert wrapped.takes_request_id is True
    assert wrapped.predict(5, "abc") == ("single", 5, "abc")


def test_predict_batch_only_serves_single_calls() -> None:
    instance = BatchOnly()
    wrapped = Predictor.wrap(instance)
    assert wrapped.has_batch and not wrapped.has_single
    assert wrapped.predict("p", "rid") == ("batch", "p")
    assert instance.calls == [["p"]]
    assert wrapped.predict_batch(("a", "b")) == [("batch", "a"), ("batch", "b")]


def test_both_single_and_batch() -> None:
    wrapped = Predictor.wrap(Both())
    assert wrapped.has_single and wrapped.has_batch
    assert wrapped.predict(1, "r") == ("single", 1)
    assert wrapped.predict_batch([1, 2]) == [("batch", 1), ("batch", 2)]


def test_predict_batch_with_wrong_length_raises() -> None:
    wrapped = Predictor.wrap(ShortBatch())
    with pytest.raises(ValueError, match="returned 1 results for 2 payloads"):
        wrapped.predict_batch([1, 2])


def test_keyword_only_request_id_is_passed() -> None:
    wrapped = Predictor.wrap(KeywordOnlyRequestId())
    assert wrapped.predict("p", "rid") == ("p", "rid")


def test_kwargs_predict_is_called() -> None:
    wrapped = Predictor.wrap(KwargsPredict())
    payload, _ = wrapped.predict("p", "rid")  # TypeError today
    assert payload == "p"


# check_predictor_class --------------------------------------------------------------------------


def test_check_accepts_predict_or_predict_batch() -> None:
    check_predictor_class(PayloadOnly)
    check_predictor_class(BatchOnly)


def test_check_rejects_non_class() -> None:
    with pytest.raises(asyncnb.UsageError, match="must be a class"):
        check_predictor_class(PayloadOnly())
    with pytest.raises(asyncnb.UsageError, match="must be a class, got function"):
        check_predictor_class(lambda payload: payload)


def test_check_rejects_class_without_predict() -> None:
    class Nothing:
        predict = "not callable"

    with pytest.raises(asyncnb.UsageError, match="Nothing defines neither predict"):
        check_predictor_class(Nothing)


def test_usage_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_predictor_class(42)


# decode_payload ---------------------------------------------------------------------------------


def test_decode_json() -> None:
    assert decode_payload(b'{"a": [1, 2]}', "application/json") == {"a": [1, 2]}
    assert decode_payload(b"[1]", "Application/JSON; charset=utf-8") == [1]


def test_decode_structured_json_suffix() -> None:
    assert decode_payload(b'{"v": true}', "application/vnd.x+json") == {"v": True}


def test_decode_empty_json_is_none() -> None:
    assert decode_payload(b"", "application/json") is None


def test_decode_invalid_json_raises() -> None:
    with pytest.raises(ValueError):
        decode_payload(b"{nope", "application/json")


def test_decode_text_with_latin1_charset() -> None:
    body = "café".encode("latin-1")
    assert decode_payload(body, "text/plain; charset=latin-1") == "café"
    assert decode_payload(body, 'text/plain; charset="latin-1"') == "café"


def test_decode_text_defaults_to_utf8() -> None:
    assert decode_payload("żółw".encode(), "text/plain") == "żółw"
    assert decode_payload(b"a,b\n", "text/csv") == "a,b\n"


def test_decode_missing_content_type_is_bytes() -> None:
    assert decode_payload(b"\x00\x01", None) == b"\x00\x01"
    assert decode_payload(b'{"a": 1}', "") == b'{"a": 1}'


def test_decode_other_types_are_bytes() -> None:
    assert decode_payload(b"\x89PNG", "image/png") == b"\x89PNG"
    assert decode_payload(b"{}", "application/octet-stream") == b"{}"


# encode_result ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [1, 2.5, None]}, [1, "two", {"three": 3}], 42, None, True, 1.5],
    ids=["dict", "list", "int", "none", "bool", "float"],
)
def test_encode_json_values(value: Any) -> None:
    data, content_type = encode_result(value)
    assert content_type == JSON_TYPE
    assert json.loads(data) == value


def test_encode_none_is_json_null() -> None:
    assert encode_result(None) == (b"null", JSON_TYPE)


def test_encode_str_is_utf8_text() -> None:
    assert encode_result("żółw") == ("żółw".encode(), TEXT_TYPE)


def test_encode_bytes_and_bytearray() -> None:
    assert encode_result(b"\x00\xff") == (b"\x00\xff", BYTES_TYPE)
    data, content_type = encode_result(bytearray(b"abc"))
    assert (data, content_type) == (b"abc", BYTES_TYPE)
    assert type(data) is bytes
    assert encode_result(memoryview(b"mv")) == (b"mv", BYTES_TYPE)


def test_encode_nan_raises_type_error_with_clear_message() -> None:
    with pytest.raises(TypeError, match=r"predict returned a float.*JSON-serializable"):
        encode_result(math.nan)
    with pytest.raises(TypeError, match=r"predict returned a dict"):
        encode_result({"score": math.inf})


def test_encode_arbitrary_object_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"predict returned a object.*bytes/str"):
        encode_result(object())
