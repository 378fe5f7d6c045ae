"""The settings of one gateway process, and the `asyncnb serve` flags that set them.

`GatewaySettings` is the single source of the serve command line: `asyncnb serve` builds its
options from these fields (`serve_flags`), and the Jupyter extension, which runs `asyncnb serve`
as a process, writes its arguments with `serve_argv`. A field without a flag is a tunable of
code that builds settings itself (tests, the embedded gateway).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from .compat import COMPAT_CONTRACTS, compat_problem

DEFAULT_STORAGE = "~/.asyncnb/storage"

FlagKind = Literal["text", "int", "float", "switch", "json", "resources", "list"]
# How an API's queue is shared among callers, within a priority (engine/queue.py): "fair" takes
# their workloads round-robin by `submitted_by`, "fifo" first come first served over everyone.
QueuePolicy = Literal["fair", "fifo"]
QUEUE_POLICIES: tuple[QueuePolicy, ...] = ("fair", "fifo")
# When the local journal's records count as written: "buffered" once they reach the kernel
# (survive a kill -9), "fsync" once they are on disk (survive power loss; group commit).
Durability = Literal["buffered", "fsync"]
DURABILITIES: tuple[Durability, ...] = ("buffered", "fsync")


def default_storage_url() -> str:
    return os.environ.get("ASYNCNB_STORAGE") or DEFAULT_STORAGE


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _flag(
    *,
    kind: FlagKind = "text",
    help: str | None = None,
    flag: str | None = None,
    env: str | None = None,
    show_default: bool = False,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The metadata of a settings field that `asyncnb serve` exposes as a flag."""
    return {
        "flag": flag,
        "kind": kind,
        "help": help,
        "env": env,
        "show_default": show_default,
        "minimum": minimum,
        "choices": choices,
    }


@dataclass(kw_only=True)
class GatewaySettings:
    host: str = field(default="127.0.0.1", metadata=_flag(show_default=True))
    port: int = field(
        default=8765, metadata=_flag(kind="int", show_default=True, help="0 picks a free port")
    )
    storage: str = field(
        default_factory=default_storage_url,
        metadata=_flag(
            env="ASYNCNB_STORAGE",
            help="fsspec URL (file://, s3://, memory://); default ~/.asyncnb/storage",
        ),
    )
    storage_options: dict[str, Any] = field(
        default_factory=dict, metadata=_flag(kind="json", help="JSON of fsspec storage options")
    )
    scheduler: str | None = field(
        default=None, metadata=_flag(help="address of an existing Dask scheduler")
    )
    cluster: str | None = field(
        default=None, metadata=_flag(help="module:callable returning a Dask Cluster")
    )
    n_workers: int | None = field(
        default=None, metadata=_flag(kind="int", flag="--workers", help="LocalCluster workers")
    )
    threads_per_worker: int | None = field(default=None, metadata=_flag(kind="int"))
    worker_resources: dict[str, float] = field(
        default_factory=dict,
        metadata=_flag(kind="resources", help="e.g. GPU=1 (LocalCluster workers)"),
    )
    token: str | None = field(
        default_factory=lambda: _env("ASYNCNB_TOKEN"), metadata=_flag(env="ASYNCNB_TOKEN")
    )
    admin_token: str | None = field(
        default_factory=lambda: _env("ASYNCNB_ADMIN_TOKEN"),
        metadata=_flag(env="ASYNCNB_ADMIN_TOKEN"),
    )
    public_url: str | None = field(
        default=None, metadata=_flag(help="URL shown to users in endpoints")
    )
    insecure: bool = field(
        default=False,
        metadata=_flag(kind="switch", help="allow a non-loopback --host without a token"),
    )
    webhook_attempts: int = field(default=6, metadata=_flag(kind="int", show_default=True))
    webhook_backoff_s: float = field(
        default=1.0,
        metadata=_flag(
            kind="float",
            flag="--webhook-backoff",
            show_default=True,
            help="first webhook retry delay in seconds, doubled each time",
        ),
    )
    max_chunk: int = field(
        default=64,
        metadata=_flag(
            kind="int", show_default=True, help="most queued workloads sent to Dask as one task"
        ),
    )
    prefetch: int = field(
        default=1,
        metadata=_flag(
            kind="int",
            show_default=True,
            help="chunks waiting on each worker slot beyond the running one, under a backlog",
        ),
    )
    queue_policy: QueuePolicy = field(
        default="fair",
        metadata=_flag(
            show_default=True,
            choices=QUEUE_POLICIES,
            help="how an API's queue is shared among callers within a priority: fair "
            "(submitters take turns, by submitted_by) or fifo (first come first served)",
        ),
    )
    durability: Durability = field(
        default="buffered",
        metadata=_flag(
            show_default=True,
            env="ASYNCNB_DURABILITY",
            choices=DURABILITIES,
            help="when a local journal's record counts as written (202, results): buffered "
            "(in the kernel: survives a crash of the gateway) or fsync (on disk: survives "
            "power loss; concurrent writes share an fsync). Object stores: a PUT either way",
        ),
    )
    max_deploy_bytes: int = field(
        default=512 * 1024 * 1024,
        metadata=_flag(kind="int", show_default=True, help="largest PUT /apis/{api} body"),
    )
    autoscale_interval_s: float = field(
        default=10.0,
        metadata=_flag(
            kind="float",
            flag="--autoscale-interval",
            show_default=True,
            help="seconds between autoscaling decisions (>= 1)",
        ),
    )
    # None: the LocalCluster's size, or 0 (and unbounded) for --cluster
    min_workers: int | None = field(
        default=None,
        metadata=_flag(
            kind="int",
            help="fewest workers autoscaling keeps (default: --workers; 0 for --cluster)",
        ),
    )
    max_workers: int | None = field(
        default=None,
        metadata=_flag(
            kind="int",
            help="most workers autoscaling starts (default: --workers; none for --cluster)",
        ),
    )
    compat: tuple[str, ...] = field(
        default=COMPAT_CONTRACTS,
        metadata=_flag(
            kind="list",
            help="the peers' contracts served under /compat/ (comma list of "
            + ", ".join(COMPAT_CONTRACTS)
            + "; none: only asyncnb's own)  [default: all]",
            env="ASYNCNB_COMPAT",
        ),
    )
    webhook_allow: tuple[str, ...] = field(
        default=(),
        metadata=_flag(
            kind="list",
            help="comma list of hosts, .domains or networks webhooks may reach "
            "(default: any not denied)",
        ),
    )
    webhook_deny: tuple[str, ...] = field(
        default=(),
        metadata=_flag(
            kind="list",
            help="comma list of hosts, .domains or networks "
            "webhooks must not reach (link-local and metadata are always denied)",
        ),
    )
    body_timeout_s: float = field(
        default=60.0,
        metadata=_flag(
            kind="float",
            flag="--body-timeout",
            show_default=True,
            help="seconds a client may pause while sending a body (slow clients get 408)",
        ),
    )
    storage_timeout_s: float = field(
        default=10.0,
        metadata=_flag(
            kind="float",
            flag="--storage-timeout",
            show_default=True,
            minimum=0.1,
            help="seconds a request waits on object storage before it gets 503 + Retry-After",
        ),
    )
    head_timeout_s: float = field(
        default=20.0,
        metadata=_flag(
            kind="float",
            flag="--head-timeout",
            show_default=True,
            help="seconds a client has to send a request's line and headers (then 408, closed)",
        ),
    )
    first_byte_timeout_s: float = field(
        default=10.0,
        metadata=_flag(
            kind="float",
            flag="--first-byte-timeout",
            show_default=True,
            help="seconds a new connection may stay silent before it is closed",
        ),
    )
    max_head_bytes: int = field(
        default=64 * 1024,
        metadata=_flag(
            kind="int", show_default=True, help="largest request head (line and headers): 431"
        ),
    )
    max_headers: int = field(
        default=100,
        metadata=_flag(kind="int", show_default=True, help="most headers of a request: 431"),
    )
    max_connections_per_client: int = field(
        default=256,
        metadata=_flag(
            kind="int",
            show_default=True,
            help="open connections one client address may hold (then 503); 0 for no cap, "
            "behind a proxy that sets its own",
        ),
    )
    idle_timeout_s: float | None = field(
        default=None,
        metadata=_flag(
            kind="float",
            flag="--idle-timeout",
            help="stop after this many seconds without a request and without unfinished "
            "workloads (default: never; a local gateway started on demand: 1800)",
        ),
    )
    log_level: str = field(default="warning", metadata=_flag(show_default=True))
    standby: bool = field(
        default=False,
        metadata=_flag(
            kind="switch",
            help="when another gateway serves the storage, wait as a standby and take over "
            "when its lease ends (default: refuse to start, saying who serves it)",
            env="ASYNCNB_STANDBY",
        ),
    )
    lease_ttl_s: float = field(
        default=15.0,
        metadata=_flag(
            kind="float",
            flag="--lease-ttl",
            show_default=True,
            minimum=1,
            help="seconds an active gateway's storage lease lasts unrenewed (renewed every "
            "third of it); a standby takes over after it",
        ),
    )
    # tunables without a flag
    inline_payload_bytes: int = 1024 * 1024
    inline_result_bytes: int = 1024 * 1024
    sweep_interval_s: float = 3600.0

    def __post_init__(self) -> None:
        # An empty token is no token, wherever it came from.
        self.token = self.token or None
        self.admin_token = self.admin_token or None

    @property
    def effective_admin_token(self) -> str | None:
        return self.admin_token or self.token

    def problem(self) -> str | None:
        """Why `asyncnb serve` refuses these settings, or None."""
        if self.scheduler and (self.n_workers or self.cluster):
            return "--scheduler excludes --workers and --cluster"
        if self.autoscale_interval_s < 1:
            return "--autoscale-interval must be at least 1 second"
        if self.idle_timeout_s is not None and self.idle_timeout_s <= 0:
            return "--idle-timeout must be more than 0 seconds"
        if self.head_timeout_s <= 0 or self.first_byte_timeout_s <= 0:
            return "--head-timeout and --first-byte-timeout must be more than 0 seconds"
        if self.max_head_bytes < 1024 or self.max_headers < 10:
            return "--max-head-bytes must be at least 1024 and --max-headers at least 10"
        if self.max_connections_per_client < 0:
            return "--max-connections-per-client must be 0 (no cap) or more"
        if self.queue_policy not in QUEUE_POLICIES:
            return f"--queue-policy must be one of {', '.join(QUEUE_POLICIES)}"
        if problem := compat_problem(self.compat, "--compat"):
            return problem
        if self.durability not in DURABILITIES:
            return f"--durability must be one of {', '.join(DURABILITIES)}"
        if not is_loopback_host(self.host) and not self.token and not self.insecure:
            return f"refusing to listen on {self.host} without --token; pass --insecure to insist"
        return None


@dataclass(frozen=True)
class ServeFlag:
    """One `asyncnb serve` option and the setting it sets."""

    setting: str
    flag: str
    kind: FlagKind
    help: str | None
    env: str | None
    show_default: bool
    minimum: float | None
    default: Any  # on the command line: None where the setting's default is computed
    choices: tuple[str, ...] | None = None  # the only values a text flag takes


def serve_flags() -> list[ServeFlag]:
    flags = []
    for spec in fields(GatewaySettings):
        if "flag" not in spec.metadata:
            continue
        meta = spec.metadata
        computed = spec.default_factory is not MISSING or spec.default is None
        default = None if computed else spec.default
        if meta["kind"] == "list":
            default = ""
        flags.append(
            ServeFlag(
                setting=spec.name,
                flag=meta["flag"] or "--" + spec.name.replace("_", "-"),
                kind=meta["kind"],
                help=meta["help"],
                env=meta["env"],
                show_default=meta["show_default"],
                minimum=meta["minimum"],
                default=default,
                choices=meta["choices"],
            )
        )
    return flags


def settings_from_flags(given: Mapping[str, Any]) -> GatewaySettings:
    """Settings from parsed serve flags (None: not given, so the setting's own default)."""
    chosen = {name: value for name, value in given.items() if value is not None}
    for spec in serve_flags():
        if spec.kind == "text" and spec.default is None and chosen.get(spec.setting) == "":
            del chosen[spec.setting]  # `--token ""` or an empty variable: not given
        if spec.kind == "list" and chosen.get(spec.setting) == "":
            del chosen[spec.setting]  # not given: the setting's own default
        value = chosen.get(spec.setting)
        if spec.kind == "list" and isinstance(value, str):
            chosen[spec.setting] = split_list(value)
        elif spec.kind == "json" and isinstance(value, str):
            chosen[spec.setting] = _json_object(spec.flag, value)
        elif spec.kind == "resources" and isinstance(value, str):
            chosen[spec.setting] = parse_resources(value)
    return GatewaySettings(**chosen)


def serve_argv(values: Mapping[str, Any]) -> list[str]:
    """`asyncnb serve` arguments that set these settings (None and empty values are left out)."""
    by_setting = {spec.setting: spec for spec in serve_flags()}
    argv: list[str] = []
    for name, value in values.items():
        spec = by_setting.get(name)
        if spec is None:
            raise ValueError(f"{name!r} is not a setting of asyncnb serve")
        if value is None or (spec.kind in ("json", "resources", "list") and not value):
            continue
        if spec.kind == "switch":
            if value:
                argv.append(spec.flag)
            continue
        if spec.kind == "json":
            text = json.dumps(value)
        elif spec.kind == "resources":
            text = format_resources(value)
        elif spec.kind == "list":
            text = ",".join(value)
        elif spec.kind == "float":
            text = _number(value)
        else:
            text = str(value)
        argv += [spec.flag, text]
    return argv


def _json_object(flag: str, text: str) -> dict[str, Any]:
    parsed = json.loads(text) if text else {}
    if not isinstance(parsed, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text[:80]!r}")
    return parsed


def split_list(text: str) -> tuple[str, ...]:
    return tuple(entry for entry in text.split(",") if entry.strip())


def parse_resources(text: str | None) -> dict[str, float]:
    """`GPU=1,MEMORY=4e9` → {"GPU": 1.0, "MEMORY": 4e9}."""
    resources: dict[str, float] = {}
    for part in (text or "").replace(" ", ",").split(","):
        if not part:
            continue
        name, sep, amount = part.partition("=")
        if not sep or not name:
            raise ValueError(f"resource {part!r} is not NAME=AMOUNT")
        try:
            value = float(amount)
        except ValueError:
            raise ValueError(f"resource {part!r}: {amount!r} is not a number") from None
        if not 0 <= value < float("inf"):
            raise ValueError(f"resource {part!r}: the amount must be a finite number >= 0")
        resources[name] = value
    return resources


def format_resources(resources: Mapping[str, float]) -> str:
    return ",".join(f"{name}={_number(amount)}" for name, amount in resources.items())


def _number(value: float) -> str:
    """A number as text that parses back to the same value (`:g` rounds 4096.5e3 away)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address (not "": to a server, that means every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
