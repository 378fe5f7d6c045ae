"""The `asyncnb` commands, in this process: what they offer, and how they refuse bad input
(one `error:` line, no traceback) before anything starts or any gateway is contacted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from asyncnb.cli import main
from asyncnb.contract.options import option_flags
from asyncnb.contract.settings import serve_flags

COMMANDS = ["serve", "deploy", "submit", "status", "result", "cancel", "undeploy", "get"]


@pytest.fixture(autouse=True)
def _nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal must come before the gateway would start: starting it fails the test."""

    async def refuse_to_serve(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("asyncnb serve went on to start a gateway")

    def refuse_to_connect(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the command went on to contact a gateway")

    monkeypatch.setattr("asyncnb.server.serve.serve", refuse_to_serve)
    monkeypatch.setattr("asyncnb.client.Client.request", refuse_to_connect)
    for name in ("ASYNCNB_STORAGE", "ASYNCNB_TOKEN", "ASYNCNB_ADMIN_TOKEN", "ASYNCNB_GATEWAY"):
        monkeypatch.delenv(name, raising=False)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="asyncnb")


def assert_one_error_line(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    # a refusal the command raised on purpose, not an exception that escaped it
    assert isinstance(result.exception, SystemExit)


# what is offered ------------------------------------------------------------------------------


def test_every_command_exists() -> None:
    assert isinstance(main, click.Group)
    assert set(COMMANDS) <= set(main.commands)
    listed = invoke("--help")
    assert listed.exit_code == 0
    for command in COMMANDS:
        assert command in listed.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: asyncnb {command}")
    assert invoke(command, "-h").output == result.output


def test_version() -> None:
    result = invoke("--version")
    assert (result.exit_code, result.output) == (0, "asyncnb, version 0.1.0\n")


def test_serve_help_lists_every_serve_flag() -> None:
    result = invoke("serve", "--help")
    flags = [flag.flag for flag in serve_flags()]
    missing = [flag for flag in flags if flag not in result.output]
    assert missing == []
    assert "--autoscale-interval" in flags and "--workers" in flags


def test_deploy_help_lists_every_deploy_option() -> None:
    help_text = " ".join(invoke("deploy", "--help").output.split())  # undo the wrapping
    missing = [flag for flag, _, _ in option_flags() if flag not in help_text]
    assert missing == []
    for flag, _, description in option_flags():
        if description:
            assert " ".join(description.split()[:2]) in help_text, flag


def test_deploy_options_are_flags_of_the_command() -> None:
    deploy = main.commands["deploy"]
    given = {param.name: param.opts for param in deploy.params}
    for flag, name, _ in option_flags():
        assert given[name] == [flag]


# serve refuses bad settings before starting ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scheduler", "tcp://x:1", "--workers", "2"], "--scheduler excludes"),
        (["--scheduler", "tcp://x:1", "--cluster", "m:f"], "--scheduler excludes"),
        (["--autoscale-interval", "0.5"], "--autoscale-interval must be at least 1 second"),
        (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without --token"),
        (["--host", "0.0.0.0", "--token", ""], "without --token"),
        (["--worker-resources", "GPU"], "resource 'GPU' is not NAME=AMOUNT"),
        (["--worker-resources", "GPU=many"], "'many' is not a number"),
        (["--storage-options", "{"], "Expecting property name"),
    ],
)
def test_serve_refuses_bad_settings(args: list[str], fragment: str) -> None:
    assert_one_error_line(invoke("serve", *args), fragment)


def test_serve_refuses_memory_storage_for_a_remote_scheduler() -> None:
    result = invoke("serve", "--scheduler", "tcp://10.0.0.5:8786", "--storage", "memory://x")
    assert_one_error_line(result, "memory:// storage lives in the gateway process")


def test_serve_takes_an_empty_token_variable_for_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCNB_TOKEN", "")
    assert_one_error_line(invoke("serve", "--host", "0.0.0.0"), "without --token")


@pytest.mark.parametrize("text", ["[1]", "5", '"abc"', '[["a", 1]]'])
def test_serve_refuses_storage_options_that_are_not_an_object(text: str) -> None:
    assert_one_error_line(invoke("serve", "--storage-options", text), "must be a JSON object")


def test_serve_bad_number_is_a_usage_error() -> None:
    result = invoke("serve", "--workers", "two")
    assert result.exit_code == 2
    assert "Invalid value for '--workers'" in result.stderr
    assert "Traceback" not in result.output


# client commands refuse bad input before contacting a gateway ---------------------------------


def test_deploy_without_a_name() -> None:
    assert_one_error_line(invoke("deploy", "predictor.py:Model"), "--name is required")


def test_deploy_of_a_bad_target() -> None:
    assert_one_error_line(invoke("deploy", "predictor.py", "--name", "m"), "FILE.py:ClassName")
    assert_one_error_line(invoke("deploy", "nowhere.py:Model", "--name", "m"), "no such file")


def test_deploy_of_a_missing_class(tmp_path: Path) -> None:
    source = tmp_path / "predictor.py"
    source.write_text("class Model:\n    def predict(self, payload):\n        return payload\n")
    result = invoke("deploy", f"{source}:Other", "--name", "m")
    assert_one_error_line(result, "defines no 'Other'")
    result = invoke("deploy", f"{source}:Model", "--name", "m", "--config", "[1]")
    assert_one_error_line(result, "--config must be a JSON object")


def test_submit_without_a_payload() -> None:
    assert_one_error_line(invoke("submit", "api"), "give a payload")


def test_submit_of_malformed_json() -> None:
    assert_one_error_line(invoke("submit", "api", "--json", "{"), "Expecting property name")


def test_commands_need_their_arguments() -> None:
    for command in ("status", "result", "cancel"):
        result = invoke(command, "api")
        assert result.exit_code == 2
        assert "Missing argument 'WORKLOAD_ID'" in result.stderr
