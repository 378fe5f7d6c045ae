"""The engine's record of one workload, and its two stored forms (queue entry, final record).

The client's handle of a workload is `asyncnb.client.Workload`; what the HTTP API answers is
`public()` (documented as `WorkloadRecord` in the OpenAPI schema).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from ..contract.keys import OWNER
from ..contract.predictor import JSON_TYPE
from ..contract.status import Status
from ..contract.tasks import ErrorRecord
from ..contract.timestamps import isoformat, parse_iso
from . import jsoncodec


class WorkloadState:
    """Slots keep the record small; an inline body (up to the inline limit) comes on top.

    Where it is, besides `status`: in its API's queue (`chunk_key` and `retry_at` are None),
    handed to Dask as part of the chunk `chunk_key`, or waiting out a retry backoff until
    `retry_at`.
    """

    __slots__ = (
        "api",
        "attempts",
        "body",
        "chunk_key",
        "content_type",
        "created_at",
        "done",
        "error",
        "expires_at",
        "finished_at",
        "id",
        "idempotency_key",
        "key_id",
        "payload_stored",
        "priority",
        "progress",
        "result_content_type",
        "result_data",
        "result_size",
        "result_stored",
        "retry_at",
        "size",
        "started_at",
        "status",
        "submitted_by",
        "version",
        "webhook",
        "webhook_events",
        "webhook_format",
        "webhook_url",
    )

    def __init__(
        self,
        id: str,
        api: str,
        *,
        created_at: float,
        content_type: str,
        priority: int = 0,
        body: bytes | None = None,
        payload_stored: bool = False,
        size: int = 0,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        attempts: int = 0,
        submitted_by: str = OWNER,
        key_id: str | None = None,
        webhook_events: tuple[str, ...] | None = None,
        webhook_format: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.api = api
        self.status = Status.IN_QUEUE
        self.created_at = created_at
        self.content_type = content_type
        self.priority = priority
        self.body = body
        self.payload_stored = payload_stored
        self.size = size
        self.webhook_url = webhook_url
        # the event types its webhook gets (X-Webhook-Events); None: the API's choice
        self.webhook_events = webhook_events
        # the shape of its webhook's body, when a peer's contract submitted it (a name an
        # adapter registered, engine/webhook_formats.py, and what that adapter keeps with it)
        self.webhook_format = webhook_format
        self.idempotency_key = idempotency_key
        self.attempts = attempts
        # who submitted it: a key's name (and that key's id), or OWNER for the tokens
        self.submitted_by = submitted_by
        self.key_id = key_id
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.expires_at: float | None = None
        self.progress: dict[str, Any] | None = None
        self.version: int | None = None
        self.result_data: bytes | None = None
        self.result_content_type: str | None = None
        self.result_size: int | None = None
        self.result_stored = False
        self.error: ErrorRecord | None = None
        self.webhook: dict[str, Any] | None = None
        self.done: asyncio.Event | None = None
        self.chunk_key: str | None = None
        self.retry_at: float | None = None

    @property
    def queued(self) -> bool:
        """In its API's queue: neither handed to Dask nor waiting out a retry backoff."""
        return self.status is Status.IN_QUEUE and self.chunk_key is None and self.retry_at is None

    # the durable queue entry -------------------------------------------------------------
    def queue_entry(self) -> bytes:
        header = {
            "id": self.id,
            "api": self.api,
            "created_at": self.created_at,
            "content_type": self.content_type,
            "priority": self.priority,
            "payload_stored": self.payload_stored,
            "size": self.size,
            "webhook_url": self.webhook_url,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "submitted_by": self.submitted_by,
            "key_id": self.key_id,
        }
        if self.webhook_events is not None:
            header["webhook_events"] = list(self.webhook_events)
        if self.webhook_format is not None:
            header["webhook_format"] = self.webhook_format
        return jsoncodec.dumps(header) + b"\n" + (self.body or b"")

    @classmethod
    def from_queue_entry(cls, data: bytes) -> WorkloadState:
        header_line, _, body = data.partition(b"\n")
        header = json.loads(header_line)
        return cls(
            header["id"],
            header["api"],
            created_at=header["created_at"],
            content_type=header["content_type"],
            priority=header.get("priority", 0),
            body=None if header.get("payload_stored") else body,
            payload_stored=bool(header.get("payload_stored")),
            size=header.get("size", len(body)),
            webhook_url=header.get("webhook_url"),
            idempotency_key=header.get("idempotency_key"),
            attempts=header.get("attempts", 0),
            submitted_by=header.get("submitted_by") or OWNER,
            key_id=header.get("key_id"),
            webhook_events=_event_types(header.get("webhook_events")),
            webhook_format=_format(header.get("webhook_format")),
        )

    # the views -----------------------------------------------------------------------------
    def public(self, status: Status | None = None) -> dict[str, Any]:
        status = status or self.status
        view: dict[str, Any] = {
            "id": self.id,
            "api": self.api,
            "status": status.value,
            "attempts": self.attempts,
            "priority": self.priority,
            "submitted_by": self.submitted_by,
            "created_at": isoformat(self.created_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
        }
        if self.version is not None:
            view["version"] = self.version
        if self.progress is not None:
            view["progress"] = self.progress
        if status is Status.COMPLETED:
            view["result_content_type"] = self.result_content_type
            view["result_size"] = self.result_size
            view["result_url"] = f"/{self.api}/{self.id}/result"
            inline = self.inline_result()
            if inline is not _NO_INLINE:
                view["result"] = inline
        if self.error is not None:
            view["error"] = self.error
        if self.webhook is not None:
            view["webhook"] = self.webhook
        return view

    def inline_result(self) -> Any:
        """The result as a JSON value for the status view, when it is JSON or text kept inline."""
        if self.result_data is None or self.result_content_type is None:
            return _NO_INLINE
        if self.result_content_type.startswith(JSON_TYPE):
            return json.loads(self.result_data)
        if self.result_content_type.startswith("text/"):
            return self.result_data.decode("utf-8", errors="replace")
        return _NO_INLINE

    def final_record(self, status: Status) -> dict[str, Any]:
        record = self.public(status)
        record["expires_at"] = self.expires_at
        record["content_type"] = self.content_type
        record["key_id"] = self.key_id
        if self.webhook_events is not None:
            record["webhook_events"] = list(self.webhook_events)
        if self.webhook_format is not None:
            record["webhook_format"] = self.webhook_format
        if self.result_data is not None:
            record["_result_b64"] = base64.b64encode(self.result_data).decode()
        record["_result_stored"] = self.result_stored
        record.pop("result", None)
        return record

    @classmethod
    def from_final_record(cls, record: dict[str, Any]) -> WorkloadState:
        workload = cls(
            record["id"],
            record["api"],
            created_at=parse_iso(record.get("created_at")) or 0.0,
            content_type=record.get("content_type") or "",
            priority=record.get("priority", 0),
            attempts=record.get("attempts", 0),
            submitted_by=record.get("submitted_by") or OWNER,
            key_id=record.get("key_id"),
            webhook_events=_event_types(record.get("webhook_events")),
            webhook_format=_format(record.get("webhook_format")),
        )
        workload.status = Status(record["status"])
        workload.started_at = parse_iso(record.get("started_at"))
        workload.finished_at = parse_iso(record.get("finished_at"))
        workload.expires_at = record.get("expires_at")
        workload.version = record.get("version")
        workload.progress = record.get("progress")
        workload.error = record.get("error")
        workload.webhook = record.get("webhook")
        workload.result_content_type = record.get("result_content_type")
        workload.result_size = record.get("result_size")
        workload.result_stored = bool(record.get("_result_stored"))
        encoded = record.get("_result_b64")
        if encoded is not None:
            workload.result_data = base64.b64decode(encoded)
        return workload

    def webhook_event(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": self.status.value,
            "id": self.id,
            "api": self.api,
            "status": self.status.value,
            "submitted_by": self.submitted_by,
            "created_at": isoformat(self.created_at),
            "finished_at": isoformat(self.finished_at),
        }
        if self.status is Status.COMPLETED:
            inline = self.inline_result()
            if inline is not _NO_INLINE:
                event["result"] = inline
            event["result_url"] = f"/{self.api}/{self.id}/result"
            event["result_content_type"] = self.result_content_type
        if self.error is not None:
            event["error"] = self.error
        return event


def _format(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


def _event_types(value: Any) -> tuple[str, ...] | None:
    return tuple(str(v) for v in value) if isinstance(value, list) else None


class _NoInline:
    def __repr__(self) -> str:
        return "<no inline result>"


_NO_INLINE: Any = _NoInline()
NO_INLINE = _NO_INLINE  # what `inline_result` answers for a result it cannot show inline


# How a workload ends: its final status, and the error when it failed.
Ending = tuple[WorkloadState, Status, ErrorRecord | None]
