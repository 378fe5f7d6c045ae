"""The predictor contract: how a user's class is built, and the body codecs both ways.

A payload is encoded by the client (`encode_payload`), checked by the gateway
(`payload_problem`) and decoded for `predict` by the worker (`decode_payload`); a result is
encoded by the worker (`encode_result`) and decoded by the client (`decode_payload` again).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BYTES_TYPE = "application/octet-stream"


def check_predictor_class(cls: Any) -> None:
    """Raise UsageError unless `cls` is a class with predict or predict_batch."""
    if not inspect.isclass(cls):
        raise UsageError(f"a predictor must be a class, got {type(cls).__name__}")
    if not callable(getattr(cls, "predict", None)) and not callable(
        getattr(cls, "predict_batch", None)
    ):
        raise UsageError(
            f"{cls.__name__} defines neither predict(self, payload) "
            "nor predict_batch(self, payloads)"
        )


def _accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _positional_count(func: Any) -> int:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in kinds)


def build_predictor(cls: type, config: dict[str, Any] | None) -> Any:
    """Instantiate with `config` when `__init__` takes it (Cortex: `__init__(self, config)`)."""
    init = cls.__init__  # type: ignore[misc]
    if init is object.__init__:
        return cls()
    if _accepts(init, "config"):
        return cls(config=config or {})
    if _positional_count(init) >= 2:
        return cls(config or {})
    return cls()


@dataclass(frozen=True)
class Predictor:
    """A built predictor plus what its signatures allow."""

    instance: Any
    request_id_mode: str  # "positional", "keyword" or "" (not passed)
    has_batch: bool
    has_single: bool

    @classmethod
    def wrap(cls, instance: Any) -> Predictor:
        predict = getattr(instance, "predict", None)
        has_single = callable(predict)
        mode = ""
        if has_single:
            if _positional_count(predict) >= 2:
                mode = "positional"
            elif _accepts(predict, "request_id"):
                mode = "keyword"
        return cls(
            instance=instance,
            request_id_mode=mode,
            has_batch=callable(getattr(instance, "predict_batch", None)),
            has_single=has_single,
        )

    @property
    def takes_request_id(self) -> bool:
        return bool(self.request_id_mode)

    def predict(self, payload: Any, request_id: str) -> Any:
        if not self.has_single:
            return self.instance.predict_batch([payload])[0]
        if self.request_id_mode == "positional":
            return self.instance.predict(payload, request_id)
        if self.request_id_mode == "keyword":
            return self.instance.predict(payload, request_id=request_id)
        return self.instance.predict(payload)

    def predict_batch(self, payloads: Sequence[Any]) -> list[Any]:
        results = self.instance.predict_batch(list(payloads))
        results = list(results)
        if len(results) != len(payloads):
            raise ValueError(
                f"predict_batch returned {len(results)} results for {len(payloads)} payloads"
            )
        return results


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def encode_payload(payload: Any, content_type: str | None) -> tuple[bytes, str]:
    """The body and content type a client sends for `payload`."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_type or BYTES_TYPE
    if isinstance(payload, str) and (
        content_type is None or _media(content_type).startswith("text/")
    ):
        return payload.encode("utf-8"), content_type or TEXT_TYPE
    return json.dumps(payload).encode("utf-8"), content_type or JSON_TYPE


def decode_payload(body: bytes, content_type: str | None) -> Any:
    """JSON → parsed value, text/* → str, anything else → bytes (Cortex's rule)."""
    media = _media(content_type)
    if _is_json(media):
        return json.loads(body) if body else None
    if media.startswith("text/"):
        return body.decode(_charset(content_type) or "utf-8")
    return body


def payload_problem(data: bytes, content_type: str) -> str | None:
    """Why the worker could never decode this body, or None: checked before it is accepted."""
    media = _media(content_type)
    if _is_json(media):
        if not data.strip():
            return "empty body with Content-Type application/json"
        try:
            json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"malformed JSON: {exc}"
    elif media.startswith("text/"):
        charset = _charset(content_type) or "utf-8"
        try:
            data.decode(charset)
        except LookupError:
            return f"unknown charset {charset!r}"
        except UnicodeDecodeError as exc:
            return f"body is not valid {charset} text: {exc}"
    return None


def _charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return None


def encode_result(value: Any) -> tuple[bytes, str]:
    """Raw bytes and content type of a predictor's return value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), BYTES_TYPE
    if isinstance(value, str):
        return value.encode("utf-8"), TEXT_TYPE
    try:
        return json.dumps(value, allow_nan=False).encode("utf-8"), JSON_TYPE
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"predict returned a {type(value).__name__}, which is neither JSON-serializable "
            f"nor bytes/str: {exc}"
        ) from exc
