"""Replicate's prediction: its id, its statuses, a create's body and the object answered.

A prediction id is `<api>-<workload id>` (a workload id is 32 hex digits, so the last `-`
splits it). A version is `<api>` or `<api>:<n>`, with an optional `<owner>/` in front; the
model is `asyncnb/<api>` in every answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ...contract.events import LOG, OUTPUT, START, TERMINAL_TYPES
from ...contract.names import api_name_problem, is_workload_id
from ...contract.predictor import JSON_TYPE
from ...contract.status import Status
from ...contract.timestamps import isoformat
from ...engine.webhook_formats import terminal_output
from ...engine.workload import WorkloadState
from .common import Caller, HTTPError, engine_of, public_base, result_value

CONTRACT = "replicate"
BASE = "/compat/replicate"
OWNER = "asyncnb"
MAX_WAIT_S = 60
STATUS = {
    Status.IN_QUEUE: "starting",
    Status.IN_PROGRESS: "processing",
    Status.COMPLETED: "succeeded",
    Status.FAILED: "failed",
    Status.CANCELLED: "canceled",
}
# Replicate's webhook_events_filter → asyncnb's event types (X-Webhook-Events)
EVENTS = {
    "start": (START,),
    "output": (OUTPUT,),
    "logs": (LOG,),
    "completed": TERMINAL_TYPES,
}
# Replicate's default: "whenever there are new outputs or the prediction has finished"
DEFAULT_EVENTS = ("output", "completed")
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION_NUMBER = re.compile(r"[0-9]{1,9}")
_WAIT = re.compile(r"[0-9]{1,2}")


def prediction_id(api: str, workload_id: str) -> str:
    return f"{api}-{workload_id}"


def parse_prediction_id(text: str) -> tuple[str, str]:
    """(api, workload id) of `<api>-<32 hex digits>`; 400 for anything else."""
    api, _, workload_id = text.rpartition("-")
    if not api or api_name_problem(api) or not is_workload_id(workload_id):
        raise HTTPError(400, f"invalid prediction id {text[:80]!r}: expected <api>-<32 hex digits>")
    return api, workload_id


def valid_owner(owner: str) -> str:
    """Any owner is accepted (and ignored): the API name alone says which API runs it."""
    if not _OWNER.fullmatch(owner):
        raise HTTPError(404, f"invalid model owner {owner[:80]!r}")
    return owner


def parse_version(version: Any) -> tuple[str, int | None]:
    """(api, pinned version or None) of `[<owner>/]<api>[:<n>]`; 422 for anything else."""
    if not isinstance(version, str) or not version:
        raise HTTPError(422, "version is required: the API's name, or <api>:<version>")
    text, _, number = version.partition(":")
    owner, _, api = text.rpartition("/")
    if owner:
        valid_owner(owner)
    if api_name_problem(api) or (number and not _VERSION_NUMBER.fullmatch(number)):
        raise HTTPError(
            422,
            f"invalid version {version[:80]!r}: use the API's name or <api>:<version> "
            "(asyncnb's versions are numbers)",
        )
    return api, int(number) if number else None


def preferred_wait(headers: Mapping[str, str]) -> float:
    """Replicate's `Prefer: wait` (60 s) or `wait=N` (1 to 60 s); 0 without one."""
    for preference in headers.get("prefer", "").split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not value:
            return float(MAX_WAIT_S)
        if not _WAIT.fullmatch(value) or not 1 <= int(value) <= MAX_WAIT_S:
            raise HTTPError(
                400,
                f"Prefer: wait takes a whole number of seconds from 1 to {MAX_WAIT_S}, "
                f"got {value[:40]!r}",
            )
        return float(value)
    return 0.0


@dataclass(frozen=True)
class Create:
    """A create's body, checked: the payload and the native submit headers it maps to."""

    input: dict[str, Any]
    headers: dict[str, str]


def parse_create(body: Mapping[str, Any], request: Request) -> Create:
    given = body.get("input")
    if given is None:
        raise HTTPError(422, "input is required: an object of the model's inputs")
    if not isinstance(given, dict):
        raise HTTPError(422, "input must be an object")
    headers: dict[str, str] = {}
    webhook = body.get("webhook")
    completed = body.get("webhook_completed")
    chosen = body.get("webhook_events_filter")
    if webhook is not None and completed is not None:
        raise HTTPError(422, "give webhook or webhook_completed, not both")
    if completed is not None:
        webhook, chosen = completed, chosen or ["completed"]
    if webhook is not None:
        if not isinstance(webhook, str):
            raise HTTPError(422, "webhook must be a URL")
        problem = engine_of(request).settings.webhook_policy.problem(webhook)
        if problem:
            raise HTTPError(422, f"webhook: {problem}")
        headers["x-webhook-url"] = webhook
        headers["x-webhook-events"] = ",".join(_event_types(chosen))
    elif chosen is not None:
        raise HTTPError(422, "webhook_events_filter needs a webhook")
    if key := request.headers.get("idempotency-key"):
        headers["idempotency-key"] = key
    return Create(given, headers)


def _event_types(chosen: Any) -> list[str]:
    if chosen is None:
        chosen = list(DEFAULT_EVENTS)
    if not isinstance(chosen, list) or not chosen:
        raise HTTPError(422, f"webhook_events_filter must be a list of {', '.join(EVENTS)}")
    unknown = [str(c)[:40] for c in chosen if not isinstance(c, str) or c not in EVENTS]
    if unknown:
        raise HTTPError(
            422,
            f"webhook_events_filter: unknown event(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(EVENTS)}",
        )
    return [kind for name in EVENTS if name in chosen for kind in EVENTS[name]]


def _stored_input(workload: WorkloadState) -> dict[str, Any] | None:
    """The input while the workload still holds it inline (payloads go when it ends)."""
    if workload.body is None or not workload.content_type.startswith(JSON_TYPE):
        return None
    try:
        value = json.loads(workload.body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error(workload: WorkloadState, owns: bool) -> str | None:
    if workload.error is None:
        return None
    kind = str(workload.error.get("type", "")) or "Error"
    message = str(workload.error.get("message", ""))
    return f"{kind}: {message}" if owns and message else kind


def _metrics(workload: WorkloadState) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if workload.started_at is not None and workload.finished_at is not None:
        metrics["predict_time"] = max(0.0, workload.finished_at - workload.started_at)
    if workload.finished_at is not None:
        metrics["total_time"] = max(0.0, workload.finished_at - workload.created_at)
    return metrics


def _base_url(request: Request) -> str:
    return f"{public_base(request)}{BASE}"


def predictions_url(request: Request) -> str:
    return f"{_base_url(request)}/v1/predictions"


async def prediction(
    request: Request,
    who: Caller,
    workload: WorkloadState,
    *,
    given: dict[str, Any] | None = None,
    waited_out: bool = False,
    with_logs: bool = True,
) -> dict[str, Any]:
    """The prediction object of `workload`, as `who` may see it: another caller's output,
    error message and logs stay with that caller. `waited_out`: a `Prefer: wait` ran out,
    which Replicate answers `starting` (what its client's `run()` polls on)."""
    owns = who.owns(workload)
    engine = engine_of(request)
    status = STATUS[workload.status]
    if waited_out and not workload.status.finished:
        status = "starting"
    pid = prediction_id(workload.api, workload.id)
    url = f"{predictions_url(request)}/{pid}"
    number = workload.version
    if number is None and (state := engine.apis.get(workload.api)) is not None:
        number = state.version
    output = None
    if owns and workload.status is Status.COMPLETED:
        output = await result_value(request, workload)
    logs = await engine.events.log_text(workload) if owns and with_logs else None
    given = given if given is not None else (_stored_input(workload) if owns else None)
    return _prediction_object(workload, url, number, status, given, output, owns, logs)


def _prediction_object(
    workload: WorkloadState,
    url: str,
    number: int | None,
    status: str,
    given: Any,
    output: Any,
    owns: bool,
    logs: str | None,
) -> dict[str, Any]:
    return {
        "id": prediction_id(workload.api, workload.id),
        "model": f"{OWNER}/{workload.api}",
        "version": workload.api if number is None else f"{workload.api}:{number}",
        "status": status,
        "input": given,
        "output": output,
        "error": _error(workload, owns),
        "logs": logs,
        "metrics": _metrics(workload),
        "created_at": isoformat(workload.created_at),
        "started_at": isoformat(workload.started_at),
        "completed_at": isoformat(workload.finished_at),
        "source": "api",
        "data_removed": False,
        "urls": {"get": url, "cancel": f"{url}/cancel"},
    }


def webhook_format(request: Request) -> dict[str, str]:
    """What a prediction's webhook needs to be POSTed as a prediction object: this contract's
    name (engine/webhook_formats.py) and where the prediction is read back (`urls.get`)."""
    return {"contract": CONTRACT, "predictions": predictions_url(request)}


async def webhook_prediction(
    workload: WorkloadState, event: dict[str, Any], chosen: dict[str, str]
) -> dict[str, Any]:
    """The prediction object Replicate POSTs to a webhook, from asyncnb's terminal event (its
    owner's view: the webhook is the submitter's own). Logs are not in it: read them back
    from `urls.get`."""
    pid = prediction_id(workload.api, workload.id)
    url = f"{chosen.get('predictions', BASE + '/v1/predictions')}/{pid}"
    output = terminal_output(workload, event)
    status = STATUS[workload.status]
    return _prediction_object(workload, url, workload.version, status, None, output, True, None)
