"""A RunPod job request (`{"input", "webhook"?, "policy"?}`), read into asyncnb's submission.

- `input` is the payload; a body without one is a 400.
- `webhook` is the job's own webhook, as `X-Webhook-URL` (the same URL policy; asyncnb's
  signed events are POSTed to it, not RunPod's body).
- `policy.lowPriority: true` is `X-Priority: -1`: it runs after the API's other work.
- `policy.executionTimeout` (ms) is accepted when the API's `timeout_s` already ends a predict
  within it; asyncnb has no per-workload execution timeout, so a shorter one is a 422.
- `policy.ttl` and `s3Config` are refused (422): asyncnb has no equivalent.

The body is parsed in memory, so it may be at most `MAX_BODY_BYTES` (RunPod's own limit on
`runsync`), or the API's `max_payload_bytes` when that is less (413); a client that pauses
longer than `--body-timeout` while sending it gets 408, as natively.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ...contract.options import APIOptions
from ...contract.webhook_policy import WebhookPolicy
from ...engine.aio import within
from ..uploads import BodyTimeout, PayloadTooLarge
from .common import HTTPError

_FIELDS = ("input", "webhook", "policy")
_POLICY = ("executionTimeout", "lowPriority", "ttl")
_MAX_MS = 7 * 24 * 3600 * 1000
LOW_PRIORITY = -1
MAX_BODY_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class JobRequest:
    payload: Any
    headers: dict[str, str]  # what `submit_json` takes: x-webhook-url, x-priority


async def read_job_body(
    chunks: AsyncIterator[bytes],
    declared: str | None,
    options: APIOptions,
    timeout_s: float | None,
) -> bytes:
    """The whole body (`declared`: its Content-Length), within the size and pause limits."""
    limit = min(MAX_BODY_BYTES, options.max_payload_bytes)
    too_large = f"a RunPod job body may be at most {limit} bytes"
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    data = bytearray()
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await within(iterator.__anext__(), timeout_s)
        except StopAsyncIteration:
            return bytes(data)
        except TimeoutError:
            raise BodyTimeout(f"no body bytes received for {timeout_s:g} s") from None
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(too_large)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise HTTPError(400, 'the body must be JSON: {"input": <payload>}') from None
    if not isinstance(body, dict):
        raise HTTPError(400, 'the body must be a JSON object: {"input": <payload>}')
    return body


def _integer_ms(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_MS:
        raise HTTPError(422, f"{name} must be a whole number of ms within [1, {_MAX_MS}]")
    return value


def _policy_headers(policy: Any, options: APIOptions) -> dict[str, str]:
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise HTTPError(422, "policy must be an object")
    unknown = sorted(set(policy) - set(_POLICY))
    if unknown:
        raise HTTPError(
            422,
            f"policy: unknown field {', '.join(map(repr, unknown))}; known: {', '.join(_POLICY)}",
        )
    if "ttl" in policy:
        raise HTTPError(
            422,
            "policy.ttl is not supported: a job waits in the queue until it runs, and its "
            f"result is kept for the API's result_ttl ({options.result_ttl:g} s)",
        )
    headers: dict[str, str] = {}
    if (timeout := policy.get("executionTimeout")) is not None:
        timeout_ms = _integer_ms(timeout, "policy.executionTimeout")
        limit = options.timeout_s
        if limit is None or limit * 1000 > timeout_ms:
            shown = "none" if limit is None else f"{limit:g} s"
            raise HTTPError(
                422,
                f"policy.executionTimeout={timeout_ms} ms is not supported per job: the API's "
                f"timeout_s ({shown}) ends each predict, set at deploy",
            )
    low = policy.get("lowPriority")
    if low is not None and not isinstance(low, bool):
        raise HTTPError(422, "policy.lowPriority must be true or false")
    if low:
        headers["x-priority"] = str(LOW_PRIORITY)
    return headers


def job_request(raw: bytes, options: APIOptions, webhooks: WebhookPolicy) -> JobRequest:
    """The payload and the submission headers of a RunPod job body; HTTPError (400, 422)."""
    body = _object(raw)
    if "input" not in body:
        raise HTTPError(400, 'the body needs "input": RunPod\'s jobs are {"input": <payload>}')
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise HTTPError(
            422, f"unsupported field {', '.join(map(repr, unknown))}; known: {', '.join(_FIELDS)}"
        )
    headers = _policy_headers(body.get("policy"), options)
    webhook = body.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str) or not webhook:
            raise HTTPError(422, "webhook must be a URL")
        if problem := webhooks.problem(webhook):
            raise HTTPError(422, f"webhook: {problem}")
        headers["x-webhook-url"] = webhook
    return JobRequest(body["input"], headers)
