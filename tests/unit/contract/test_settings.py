"""GatewaySettings is the single source of the `asyncnb serve` flags and of the arguments the
Jupyter extension writes: every flag round-trips through the real click command."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from asyncnb_jupyter.config import AsyncNB

from asyncnb.cli import main
from asyncnb.cli.serve import serve
from asyncnb.contract.settings import (
    GatewaySettings,
    format_resources,
    is_loopback_host,
    parse_resources,
    serve_argv,
    serve_flags,
    settings_from_flags,
    split_list,
)
from asyncnb.engine.settings import EngineSettings

# one value for every flagged setting, none of them its default
VARIED: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 0,
    "storage": "memory://settings-test",
    "storage_options": {"anon": True, "client_kwargs": {"region_name": "eu-west-1"}},
    "scheduler": "tcp://scheduler:8786",
    "cluster": "mymodule:make_cluster",
    "n_workers": 3,
    "threads_per_worker": 2,
    "worker_resources": {"GPU": 1.0, "MEMORY": 4e9},
    "token": "user-token",
    "admin_token": "admin-token",
    "public_url": "https://hub.example.org/user/a/asyncnb",
    "insecure": True,
    "webhook_attempts": 2,
    "webhook_backoff_s": 0.25,
    "max_chunk": 8,
    "prefetch": 0,
    "queue_policy": "fifo",
    "durability": "fsync",
    "max_deploy_bytes": 1024,
    "autoscale_interval_s": 2.5,
    "min_workers": 0,
    "max_workers": 5,
    "compat": ("none",),
    "webhook_allow": ("example.com", ".internal", "10.0.0.0/8"),
    "webhook_deny": ("evil.example",),
    "body_timeout_s": 30.0,
    "storage_timeout_s": 0.5,
    "head_timeout_s": 7.5,
    "first_byte_timeout_s": 3.0,
    "max_head_bytes": 32768,
    "max_headers": 50,
    "max_connections_per_client": 0,
    "idle_timeout_s": 90.5,
    "log_level": "info",
    "standby": True,
    "lease_ttl_s": 4.5,
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve flags read these variables; the tests decide their values."""
    names = ("ASYNCNB_STORAGE", "ASYNCNB_TOKEN", "ASYNCNB_ADMIN_TOKEN", "ASYNCNB_DURABILITY")
    for name in (*names, "ASYNCNB_STANDBY", "ASYNCNB_COMPAT"):
        monkeypatch.delenv(name, raising=False)


def parsed(argv: list[str]) -> GatewaySettings:
    """What `asyncnb serve ARGV` would run with (parsed by the real command, nothing started).

    The group's context is the parent, as on the command line: click keeps the help option
    of a command's first context, so a parentless one would cost `serve` its `-h`."""
    parent = main.make_context("asyncnb", ["serve"])
    ctx = serve.make_context("serve", list(argv), parent=parent)
    return settings_from_flags(ctx.params)


# the flags ------------------------------------------------------------------------------------


def test_every_flagged_field_is_a_serve_flag() -> None:
    flagged = [spec.name for spec in fields(GatewaySettings) if "flag" in spec.metadata]
    assert [flag.setting for flag in serve_flags()] == flagged
    unflagged = {spec.name for spec in fields(GatewaySettings)} - set(flagged)
    assert unflagged == {"inline_payload_bytes", "inline_result_bytes", "sweep_interval_s"}


def test_flag_names_are_unique_dashed_options() -> None:
    names = [flag.flag for flag in serve_flags()]
    assert len(names) == len(set(names))
    assert all(name.startswith("--") and "_" not in name for name in names)


def test_the_serve_command_has_exactly_the_serve_flags() -> None:
    options = {param.name: param.opts for param in serve.params}
    assert options == {flag.setting: [flag.flag] for flag in serve_flags()}


def test_varied_values_cover_every_flag_with_a_non_default() -> None:
    """Keeps the round trip below honest when a flag is added."""
    assert set(VARIED) == {flag.setting for flag in serve_flags()}
    defaults = GatewaySettings()
    assert all(getattr(defaults, name) != value for name, value in VARIED.items())


def test_no_flags_give_the_default_settings() -> None:
    assert parsed([]) == GatewaySettings()


def test_every_flag_round_trips_through_the_command() -> None:
    argv = serve_argv(VARIED)
    assert parsed(argv) == GatewaySettings(**VARIED)


@pytest.mark.parametrize(
    "values",
    [
        {"port": 9000, "n_workers": 1},
        {"storage_options": {"key": "k", "secret": "s"}, "insecure": False},
        {"worker_resources": {"GPU": 2.0}, "threads_per_worker": 4},
        {"webhook_allow": ("a.example",), "webhook_deny": ("10.0.0.0/8", "b.example")},
        {"webhook_backoff_s": 3.0, "autoscale_interval_s": 1.0, "body_timeout_s": 0.5},
        {"min_workers": 1, "max_workers": 1, "max_deploy_bytes": 1},
    ],
)
def test_partial_settings_round_trip(values: dict[str, Any]) -> None:
    assert parsed(serve_argv(values)) == GatewaySettings(**values)


def test_none_and_empty_values_are_left_out_of_argv() -> None:
    argv = serve_argv(
        {
            "scheduler": None,
            "token": None,
            "storage_options": {},
            "worker_resources": {},
            "webhook_allow": (),
            "insecure": False,
        }
    )
    assert argv == []


def test_argv_spells_each_kind() -> None:
    argv = serve_argv(
        {
            "n_workers": 2,
            "insecure": True,
            "storage_options": {"anon": True},
            "worker_resources": {"GPU": 1.0, "MEMORY": 4e9},
            "webhook_allow": ("a", "b"),
            "body_timeout_s": 2,
        }
    )
    assert argv[:3] == ["--workers", "2", "--insecure"]  # a switch takes no value
    values = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert json.loads(values["--storage-options"]) == {"anon": True}
    assert parse_resources(values["--worker-resources"]) == {"GPU": 1.0, "MEMORY": 4e9}
    assert values["--webhook-allow"] == "a,b"
    assert float(values["--body-timeout"]) == 2.0


def test_argv_refuses_a_setting_without_a_flag() -> None:
    with pytest.raises(ValueError, match="sweep_interval_s"):
        serve_argv({"sweep_interval_s": 1.0})
    with pytest.raises(ValueError, match="no_such_setting"):
        serve_argv({"no_such_setting": 1})


def test_precise_floats_round_trip() -> None:
    values = {"body_timeout_s": 1234567.5, "webhook_backoff_s": 0.123456789}
    assert parsed(serve_argv(values)) == GatewaySettings(**values)


def test_byte_sized_resources_round_trip() -> None:
    """16 GiB of MEMORY must stay 16 GiB, or an API with mem='16GiB' never fits a worker."""
    values = {"worker_resources": {"MEMORY": float(16 * 1024**3)}}
    assert parsed(serve_argv(values)) == GatewaySettings(**values)


@pytest.mark.parametrize("flag", ["--token", "--admin-token", "--storage", "--public-url"])
def test_empty_text_flag_is_not_given(flag: str) -> None:
    assert parsed([flag, ""]) == GatewaySettings()


def test_empty_token_variable_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCNB_TOKEN", "")
    assert parsed([]).token is None


def test_token_and_storage_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCNB_TOKEN", "from-env")
    monkeypatch.setenv("ASYNCNB_ADMIN_TOKEN", "admin-from-env")
    monkeypatch.setenv("ASYNCNB_STORAGE", "memory://from-env")
    settings = parsed([])
    assert (settings.token, settings.admin_token) == ("from-env", "admin-from-env")
    assert settings.storage == "memory://from-env"
    assert parsed(["--token", "flag"]).token == "flag"


def test_empty_host_is_kept_as_every_interface() -> None:
    """`--host ""` is not "not given": to a server it means all interfaces."""
    settings = parsed(["--host", ""])
    assert settings.host == ""
    assert settings.problem() is not None


def test_flags_parse_text_kinds() -> None:
    settings = settings_from_flags(
        {
            "storage_options": "",
            "worker_resources": "GPU=1 MEMORY=2",
            "webhook_deny": "a,,b",
        }
    )
    assert settings.storage_options == {}
    assert settings.worker_resources == {"GPU": 1.0, "MEMORY": 2.0}
    assert settings.webhook_deny == ("a", "b")


def test_queue_policy_is_fair_unless_told_and_must_be_a_known_one() -> None:
    assert parsed([]).queue_policy == "fair"
    assert EngineSettings().queue_policy == "fair"
    fifo = parsed(["--queue-policy", "fifo"])
    assert fifo.queue_policy == "fifo" and fifo.problem() is None
    assert EngineSettings.from_gateway(fifo).queue_policy == "fifo"
    (flag,) = [f for f in serve_flags() if f.setting == "queue_policy"]
    assert flag.flag == "--queue-policy" and flag.choices == ("fair", "fifo")
    # The command refuses an unknown policy itself (click.Choice), with one line...
    import click

    with pytest.raises(click.BadParameter, match="lifo"):
        parsed(["--queue-policy", "lifo"])
    # ...and settings built another way (the extension, Python) say why too.
    problem = GatewaySettings(queue_policy="lifo").problem()
    assert problem is not None and "--queue-policy must be one of fair, fifo" in problem


def test_durability_is_buffered_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parsed([]).durability == "buffered" and EngineSettings().durability == "buffered"
    fsync = parsed(["--durability", "fsync"])
    assert fsync.durability == "fsync" and fsync.problem() is None
    assert EngineSettings.from_gateway(fsync).durability == "fsync"
    monkeypatch.setenv("ASYNCNB_DURABILITY", "fsync")
    assert parsed([]).durability == "fsync"
    import click

    with pytest.raises(click.BadParameter, match="always"):
        parsed(["--durability", "always"])
    problem = GatewaySettings(durability="always").problem()  # type: ignore[arg-type]
    assert problem is not None and "--durability must be one of buffered, fsync" in problem


def test_standby_is_off_unless_a_flag_or_the_environment_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment sets ASYNCNB_STANDBY in its manifest; a second `asyncnb serve` typed on a
    laptop refuses, saying who serves the storage, rather than waiting unseen."""
    assert parsed([]).standby is False
    assert parsed(["--standby"]).standby is True
    monkeypatch.setenv("ASYNCNB_STANDBY", "true")
    assert parsed([]).standby is True
    monkeypatch.setenv("ASYNCNB_STANDBY", "0")
    assert parsed([]).standby is False


def test_compat_serves_every_contract_unless_narrowed_and_refuses_unknown_ones() -> None:
    from asyncnb.contract.compat import COMPAT_CONTRACTS, enabled_contracts

    assert parsed([]).compat == COMPAT_CONTRACTS
    assert enabled_contracts(parsed(["--compat", "none"]).compat) == ()
    assert parsed(["--compat", "cortex"]).compat == ("cortex",)
    problem = parsed(["--compat", "cortex,grpc"]).problem()
    assert problem is not None and "unknown contract 'grpc'" in problem


def test_storage_timeout_has_a_minimum() -> None:
    import click

    with pytest.raises(click.BadParameter):
        serve.make_context("serve", ["--storage-timeout", "0.01"])


# the Jupyter extension's arguments ------------------------------------------------------------


def test_extension_arguments_parse_to_its_settings() -> None:
    config = AsyncNB(
        storage="memory://jupyter",
        storage_options={"anon": True},
        n_workers=2,
        threads_per_worker=3,
        worker_resources={"GPU": 1},
        cluster="pkg.mod:make",
        log_level="debug",
    )
    settings = parsed(config.serve_arguments(4321, "https://hub/user/a/asyncnb"))
    assert settings == GatewaySettings(
        host="127.0.0.1",
        port=4321,
        storage="memory://jupyter",
        storage_options={"anon": True},
        cluster="pkg.mod:make",
        n_workers=2,
        threads_per_worker=3,
        worker_resources={"GPU": 1.0},
        public_url="https://hub/user/a/asyncnb",
        log_level="debug",
    )


def test_extension_scheduler_and_defaults() -> None:
    config = AsyncNB(storage="s3://bucket/asyncnb", scheduler_address="tcp://10.0.0.5:8786")
    settings = parsed(config.serve_arguments(8000, ""))
    assert settings == GatewaySettings(
        port=8000, storage="s3://bucket/asyncnb", scheduler="tcp://10.0.0.5:8786"
    )
    assert settings.problem() is None


def test_extension_extra_serve_args_come_last() -> None:
    config = AsyncNB(storage="memory://x", serve_args=["--max-chunk", "32", "--port", "1"])
    settings = parsed(config.serve_arguments(8000, ""))
    assert (settings.max_chunk, settings.port) == (32, 1)


def test_extension_storage_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCNB_STORAGE", "memory://env-storage")
    assert parsed(AsyncNB().serve_arguments(1, "")).storage == "memory://env-storage"


# problem() ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"scheduler": "tcp://s:1", "n_workers": 2}, "--scheduler excludes"),
        ({"scheduler": "tcp://s:1", "cluster": "m:f"}, "--scheduler excludes"),
        ({"autoscale_interval_s": 0.5}, "--autoscale-interval must be at least 1"),
        ({"host": "0.0.0.0"}, "refusing to listen on 0.0.0.0 without --token"),
        ({"host": "example.com"}, "--insecure"),
        ({"host": "", "token": ""}, "without --token"),
    ],
)
def test_refused_settings(values: dict[str, Any], fragment: str) -> None:
    problem = GatewaySettings(**values).problem()
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"scheduler": "tcp://s:1"},
        {"scheduler": "tcp://s:1", "n_workers": 0},
        {"n_workers": 2, "cluster": None},
        {"autoscale_interval_s": 1.0},
        {"host": "0.0.0.0", "token": "t"},
        {"host": "0.0.0.0", "insecure": True},
        {"host": "::1"},
        {"host": "localhost"},
    ],
)
def test_accepted_settings(values: dict[str, Any]) -> None:
    assert GatewaySettings(**values).problem() is None


def test_effective_admin_token_falls_back_to_the_user_token() -> None:
    assert GatewaySettings(token="u").effective_admin_token == "u"
    assert GatewaySettings(token="u", admin_token="a").effective_admin_token == "a"
    assert GatewaySettings().effective_admin_token is None


# helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GPU=1", {"GPU": 1.0}),
        ("GPU=1,MEMORY=4e9", {"GPU": 1.0, "MEMORY": 4e9}),
        ("GPU=0.5 MEMORY=2", {"GPU": 0.5, "MEMORY": 2.0}),
        (",GPU=1,,", {"GPU": 1.0}),
        ("", {}),
        (None, {}),
    ],
)
def test_parse_resources(text: str | None, expected: dict[str, float]) -> None:
    assert parse_resources(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("GPU", "is not NAME=AMOUNT"),
        ("=1", "is not NAME=AMOUNT"),
        ("GPU=x", "'x' is not a number"),
        ("GPU=", "'' is not a number"),
        ("GPU=1,TPU", "'TPU' is not NAME=AMOUNT"),
        ("GPU=-1", "finite number >= 0"),
        ("GPU=nan", "finite number >= 0"),
        ("MEMORY=inf", "finite number >= 0"),
    ],
)
def test_bad_resources(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_resources(text)


def test_format_resources_parses_back() -> None:
    resources = {"GPU": 2.0, "CPU": 0.5, "MEMORY": 4e9}
    assert parse_resources(format_resources(resources)) == resources
    assert format_resources({}) == ""


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("example.com", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        ("a,,b,", ("a", "b")),
        (" , ", ()),
    ],
)
def test_split_list(text: str, expected: tuple[str, ...]) -> None:
    assert split_list(text) == expected


# EngineSettings -------------------------------------------------------------------------------


def test_engine_defaults_are_the_gateway_defaults() -> None:
    gateway, engine = GatewaySettings(), EngineSettings()
    shared = [
        spec.name
        for spec in fields(EngineSettings)
        if spec.name in GatewaySettings.__dataclass_fields__
        and spec.name not in ("min_workers", "max_workers")
    ]
    assert len(shared) >= 8
    for name in shared:
        assert getattr(engine, name) == getattr(gateway, name), name


def test_engine_settings_from_gateway_copy_the_shared_fields() -> None:
    gateway = GatewaySettings(
        max_chunk=3,
        prefetch=7,
        webhook_attempts=1,
        webhook_backoff_s=0.5,
        autoscale_interval_s=4.0,
        storage_timeout_s=2.0,
        inline_payload_bytes=10,
        inline_result_bytes=20,
        sweep_interval_s=5.0,
        min_workers=4,
        max_workers=9,
    )
    engine = EngineSettings.from_gateway(gateway, min_workers=1, max_workers=2, finished_cache=5)
    assert (engine.max_chunk, engine.prefetch) == (3, 7)
    assert (engine.webhook_attempts, engine.webhook_backoff_s) == (1, 0.5)
    assert (engine.autoscale_interval_s, engine.storage_timeout_s) == (4.0, 2.0)
    assert (engine.inline_payload_bytes, engine.inline_result_bytes) == (10, 20)
    assert engine.sweep_interval_s == 5.0
    # the worker bounds are the caller's to decide (they depend on the cluster), not copied
    assert (engine.min_workers, engine.max_workers, engine.finished_cache) == (1, 2, 5)


def test_engine_settings_chosen_values_win_over_the_gateway() -> None:
    engine = EngineSettings.from_gateway(GatewaySettings(max_chunk=3), max_chunk=11)
    assert engine.max_chunk == 11
    assert EngineSettings.from_gateway(GatewaySettings(min_workers=4)).min_workers == 0


def test_an_empty_token_is_no_token() -> None:
    settings = GatewaySettings(token="", admin_token="")
    assert settings.token is None and settings.admin_token is None
    assert settings.effective_admin_token is None
