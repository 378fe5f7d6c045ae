"""`asyncnb deploy`: predictor classes, notebooks as APIs, notebooks run as deploy scripts."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..contract.options import chosen_options, option_flags, parse_option_value
from ..errors import UsageError
from .group import client_of, client_options, fail_cleanly, main, store_client


def load_class(target: str) -> type:
    """`path/to/file.py:ClassName` → the class, loaded from the file."""
    path_text, sep, class_name = target.rpartition(":")
    if not sep or not path_text or not class_name:
        raise UsageError(f"{target!r} must be FILE.py:ClassName")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    module_name = f"asyncnb_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise UsageError(f"{path} defines no {class_name!r}") from None


def _option_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """One --flag per deploy option, so the CLI never lags behind APIOptions."""
    for flag, name, help in reversed(option_flags()):
        func = click.option(flag, name, default=None, help=help)(func)
    return func


@main.command()
@click.argument("target")
@click.option("--name", default=None, help="API name (DNS label)")
@click.option("--config", default=None, help="JSON object passed to __init__(config)")
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="KEY VALUE",
    help="notebook parameter, when running a notebook headless",
)
@click.option("--output", default=None, help="where the headless run writes its notebook")
@_option_flags
@client_options
@click.pass_context
@fail_cleanly
def deploy(
    ctx: click.Context,
    target: str,
    name: str | None,
    config: str | None,
    parameters: tuple[tuple[str, str], ...],
    output: str | None,
    gateway: str | None,
    token: str | None,
    **options: Any,
) -> None:
    """Deploy FILE.py:Class or a notebook as API NAME.

    \b
    asyncnb deploy predictor.py:Class --name N    a predictor class
    asyncnb deploy report.ipynb --name N          the whole notebook, run per workload
    asyncnb deploy setup.ipynb [-p key value]     run the notebook headless: its %%async_api
                                                  cells deploy to --gateway
    """
    store_client(ctx, gateway, token)
    chosen = chosen_options(options)
    if target.endswith(".ipynb") and name is None:
        _run_notebook(target, dict(parameters), output, gateway, token)
        return
    if name is None:
        raise UsageError("--name is required (except to run a notebook headless)")
    if target.endswith(".ipynb"):
        api = client_of(ctx).deploy_notebook(target, name, **chosen)
    else:
        cls = load_class(target)
        parsed_config = json.loads(config) if config else None
        if parsed_config is not None and not isinstance(parsed_config, dict):
            raise UsageError("--config must be a JSON object")
        api = client_of(ctx).deploy(cls, name, parsed_config, **chosen)
    info = api.status()
    click.echo(f"deployed {name} v{info['version']} ({info['state']}) at {api.url}")
    if api.webhook_secret:
        click.echo(f"webhook secret: {api.webhook_secret}")


def _run_notebook(
    path: str,
    parameters: dict[str, str],
    output: str | None,
    gateway: str | None,
    token: str | None,
) -> None:
    """Run a notebook with papermill so that its %%async_api cells deploy to `gateway`."""
    import os
    import tempfile

    import papermill
    from papermill.exceptions import PapermillExecutionError

    from ..client import Client

    if not Path(path).is_file():
        raise UsageError(f"no such notebook: {path}")
    client = Client(gateway, token)  # without --gateway: the local gateway, found or started
    gateway, token = client.url, client.token
    before = {a["name"]: a["version"] for a in client.apis()}
    os.environ["ASYNCNB_GATEWAY"] = gateway  # inherited by the kernel papermill starts
    if token:
        os.environ["ASYNCNB_TOKEN"] = token
    target = output or str(Path(tempfile.mkdtemp(prefix="asyncnb-run-")) / Path(path).name)
    try:
        papermill.execute_notebook(
            path,
            target,
            parameters={k: parse_option_value(v) for k, v in parameters.items()},
            progress_bar=False,
            cwd=str(Path(path).resolve().parent),
        )
    except PapermillExecutionError as exc:
        raise UsageError(
            f"{path} failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue} "
            f"(executed notebook: {target})"
        ) from None
    after = Client(gateway, token).apis()
    changed = [
        f"{a['name']} v{a['version']}" for a in after if before.get(a["name"]) != a["version"]
    ]
    click.echo(
        f"ran {path} (executed notebook: {target}); deployed: " + (", ".join(changed) or "nothing")
    )
