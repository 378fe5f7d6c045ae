"""The `asyncnb` command group and what its commands share: the gateway options, the client,
and one-line errors.

The commands live beside it (workloads.py, deploy.py, serve.py) and register themselves on
`main` when `asyncnb.cli` imports them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..errors import AsyncNBError, GatewayError

if TYPE_CHECKING:
    from ..client import Client


class CLIError(click.ClickException):
    def format_message(self) -> str:
        return self.message.splitlines()[0] if self.message else "failed"

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every expected failure becomes one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayError as exc:
            detail = exc.detail
            if isinstance(detail, list):
                from ..client import explain_detail

                detail = explain_detail(detail)
            raise CLIError(f"gateway answered {exc.status_code}: {detail}") from None
        except (AsyncNBError, ValueError, OSError) as exc:
            raise CLIError(str(exc) or type(exc).__name__) from None

    return wrapper


def client_of(ctx: click.Context) -> Client:
    # imported here: `asyncnb serve` never needs the client
    from ..client import Client

    return Client(ctx.obj["gateway"], ctx.obj["token"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncnb")
def main() -> None:
    """asyncnb: asynchronous inference APIs from notebook predictors, on Dask."""


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--token", envvar="ASYNCNB_TOKEN", default=None, help="bearer token ($ASYNCNB_TOKEN)"
    )(func)
    func = click.option(
        "--gateway",
        envvar="ASYNCNB_GATEWAY",
        default=None,
        help="gateway URL ($ASYNCNB_GATEWAY; default: the local gateway of $ASYNCNB_STORAGE, "
        "started if none runs)",
    )(func)
    return func


def store_client(ctx: click.Context, gateway: str | None, token: str | None) -> None:
    ctx.ensure_object(dict)
    if gateway is None and ctx.get_parameter_source("token") is ParameterSource.ENVIRONMENT:
        token = None  # $ASYNCNB_TOKEN belongs to $ASYNCNB_GATEWAY; the local gateway has its own
    ctx.obj["gateway"] = gateway
    ctx.obj["token"] = token
