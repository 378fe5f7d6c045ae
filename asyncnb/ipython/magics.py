"""IPython magics: `%%async_api NAME [options]` deploys the predictor a cell defines.

They use the public client API, the same one a colleague or a script would use.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..client import Client, describe_api, handles
from ..contract.keys import parse_duration
from ..contract.notebooks import in_notebook_workload
from ..contract.options import APIOptions, chosen_options, option_flags
from ..errors import AsyncNBError, GatewayError


def _detail(exc: AsyncNBError) -> str:
    return str(exc.detail) if isinstance(exc, GatewayError) else str(exc)


LINE_USAGE = (
    "%async_api list | status NAME | delete NAME | logs NAME | "
    "deploy-notebook PATH NAME [--option value ...] | "
    "share NAME --to PERSON [--scope invoke|read] [--expires-in 7d] [--rate-limit N] "
    "[--max-queued N] | keys [NAME] | revoke KEY_ID"
)


def _with_deploy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for flag, name, help in reversed(option_flags()):
        func = argument(flag, dest=name, default=None, help=help)(func)
    return func


def _unquote(text: str) -> str:
    # IPython splits magic arguments without POSIX rules, so quotes stay on the values.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _chosen_options(args: Any) -> dict[str, Any]:
    """The deploy options given on the magic's line, parsed as JSON where they are JSON."""
    given = {name: getattr(args, name) for name in APIOptions.model_fields}
    return chosen_options({k: v if v is None else _unquote(v) for k, v in given.items()})


def _predictor_classes(cell: str, namespace: dict[str, Any], transformed: str) -> list[type]:
    try:
        tree = ast.parse(transformed)
    except SyntaxError:
        return []
    names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    found = []
    for name in names:
        obj = namespace.get(name)
        if isinstance(obj, type) and (
            callable(getattr(obj, "predict", None)) or callable(getattr(obj, "predict_batch", None))
        ):
            found.append(obj)
    return found


@magics_class
class AsyncAPIMagics(Magics):
    @magic_arguments()
    @argument("name", help="API name: 1-63 lowercase letters, digits and '-'")
    @argument("--predictor", default=None, help="class to deploy when the cell defines several")
    @argument("--config", default=None, help="JSON object passed to __init__(config)")
    @argument(
        "--gateway",
        default=None,
        help="gateway URL (default $ASYNCNB_GATEWAY, else an embedded gateway in this kernel)",
    )
    @argument("--token", default=None, help="bearer token (default $ASYNCNB_TOKEN)")
    @_with_deploy_options
    @line_cell_magic
    def async_api(self, line: str, cell: str | None = None) -> Any:
        """Deploy the predictor class this cell defines as an asynchronous API.

        The cell runs in the notebook's namespace; the class with `predict` or
        `predict_batch` it defines (or `--predictor`) is deployed, and the cell's value is the
        API handle, shown as a live dashboard. Running the cell again deploys a new version.

        As a line magic: %async_api list | status NAME | delete NAME | logs NAME
        """
        if cell is None:
            return self._line(line)
        args = parse_argstring(self.async_api, line)
        transformed = self._shell.transform_cell(cell)
        filename = self._shell.compile.cache(transformed)
        exec(compile(transformed, filename, "exec"), self._shell.user_ns)
        classes = _predictor_classes(cell, self._shell.user_ns, transformed)
        cls = self._choose(classes, args.predictor)
        if in_notebook_workload():
            # This notebook runs as a workload of a notebook API: define, never redeploy.
            print(f"{args.name}: not deployed (running as a notebook API workload)")
            return None
        config = self._config(args.config)
        options = _chosen_options(args)
        client = self._client(args.gateway, args.token)
        try:
            api = client.deploy(cls, args.name, config, **options)
        except AsyncNBError as exc:
            raise UsageError(f"cannot deploy {args.name}: {exc}") from None
        handles[args.name] = api
        return api

    @property
    def _shell(self) -> Any:
        return self.shell

    def _choose(self, classes: list[type], wanted: str | None) -> type:
        if wanted:
            value = self._shell.user_ns.get(wanted)
            if not isinstance(value, type):
                raise UsageError(f"--predictor {wanted!r}: no such class in the notebook")
            return value
        if not classes:
            raise UsageError(
                "the cell defines no predictor class (a class with predict(self, payload) or "
                "predict_batch(self, payloads))"
            )
        if len(classes) > 1:
            names = ", ".join(c.__name__ for c in classes)
            raise UsageError(
                f"the cell defines several predictors ({names}): pick one with --predictor"
            )
        return classes[0]

    @staticmethod
    def _config(text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        try:
            config = json.loads(_unquote(text))
        except ValueError as exc:
            raise UsageError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise UsageError("--config must be a JSON object")
        return config

    @staticmethod
    def _client(gateway: str | None, token: str | None) -> Client:
        try:
            return Client(gateway, token)
        except AsyncNBError as exc:
            raise UsageError(str(exc)) from None

    # line magic ---------------------------------------------------------------------------
    def _line(self, line: str) -> Any:
        words = shlex.split(line)
        if not words:
            raise UsageError(f"usage: {LINE_USAGE}")
        command, rest = words[0], words[1:]
        if command == "list" and not rest:
            return self._list()
        if command == "deploy-notebook" and len(rest) >= 2:
            return self._deploy_notebook(rest)
        if command == "share" and rest:
            return self._share(rest)
        if command in ("keys", "revoke") and len(rest) <= 1:
            if command == "revoke" and not rest:
                raise UsageError("usage: %async_api revoke KEY_ID")
            client = handles[rest[0]].client if rest and rest[0] in handles else None
            client = client or self._client(None, None)
            try:
                if command == "keys":
                    return self._keys(client, rest[0] if rest else None)
                return self._revoke(client, rest[0])
            except AsyncNBError as exc:
                raise UsageError(f"{command}: {_detail(exc)}") from None
        if command in ("status", "delete", "logs") and len(rest) == 1:
            name = rest[0]
            client = handles[name].client if name in handles else self._client(None, None)
            try:
                return getattr(self, f"_{command}")(client, name)
            except GatewayError as exc:
                raise UsageError(f"{command} {name}: {exc.detail}") from None
            except AsyncNBError as exc:
                raise UsageError(f"{command} {name}: {exc}") from None
        raise UsageError(f"usage: {LINE_USAGE}")

    def _deploy_notebook(self, words: list[str]) -> Any:
        parser = argparse.ArgumentParser(
            prog="%async_api deploy-notebook", add_help=False, exit_on_error=False
        )
        parser.add_argument("path")
        parser.add_argument("name")
        parser.add_argument("--gateway", default=None)
        parser.add_argument("--token", default=None)
        parser.add_argument("--kernel-name", default=None)
        for flag, option, _ in option_flags():
            parser.add_argument(flag, dest=option, default=None)
        try:
            args, unknown = parser.parse_known_args(words)
        except argparse.ArgumentError as exc:
            raise UsageError(f"deploy-notebook: {exc}") from None
        if unknown:
            raise UsageError(f"deploy-notebook: unrecognized arguments: {' '.join(unknown)}")
        options = _chosen_options(args)
        client = self._client(args.gateway, args.token)
        try:
            return client.deploy_notebook(
                args.path, args.name, kernel_name=args.kernel_name, **options
            )
        except AsyncNBError as exc:
            raise UsageError(f"cannot deploy {args.path}: {exc}") from None

    def _share(self, words: list[str]) -> Any:
        parser = argparse.ArgumentParser(
            prog="%async_api share", add_help=False, exit_on_error=False
        )
        parser.add_argument("name")
        parser.add_argument("--to", default=None, dest="person")
        parser.add_argument("--scope", action="append", choices=["invoke", "read"], default=None)
        parser.add_argument("--expires-in", default=None)
        parser.add_argument("--rate-limit", type=float, default=None)
        parser.add_argument("--burst", type=int, default=None)
        parser.add_argument("--max-queued", type=int, default=None)
        try:
            args, unknown = parser.parse_known_args(words)
            expires = parse_duration(args.expires_in) if args.expires_in else None
        except (argparse.ArgumentError, ValueError) as exc:
            raise UsageError(f"share: {exc}") from None
        if args.person is None:
            raise UsageError("share: say who the key is for: --to PERSON")
        if unknown:
            raise UsageError(f"share: unrecognized arguments: {' '.join(unknown)}")
        try:
            api = handles.get(args.name) or self._client(None, None).api(args.name)
            shared = api.share(
                args.person,
                scopes=args.scope or ["invoke"],
                expires_in_s=expires,
                rate_limit=args.rate_limit,
                burst=args.burst,
                max_queued=args.max_queued,
            )
        except AsyncNBError as exc:
            raise UsageError(f"share {args.name}: {_detail(exc)}") from None
        print(shared.instructions())
        return None

    def _keys(self, client: Client, api: str | None) -> None:
        found = client.list_keys(api)
        if not found:
            print("no API keys" + (f" for {api}" if api else ""))
        for key in found:
            print(
                f"{key['id']}  {key['name']}  {key['state']}  apis={','.join(key['apis'])}  "
                f"scopes={','.join(key['scopes'])}  last used {key.get('last_used_at') or '-'}"
            )

    def _revoke(self, client: Client, key_id: str) -> None:
        revoked = client.revoke_key(key_id)
        print(f"revoked key {revoked['id']} of {revoked['name']}")

    def _list(self) -> None:
        apis = self._client(None, None).apis()
        if not apis:
            print("no APIs deployed")
            return
        for info in apis:
            print(describe_api(info))

    def _status(self, client: Client, name: str) -> None:
        print(json.dumps(client.api(name).status(), indent=2))

    def _delete(self, client: Client, name: str) -> None:
        client.undeploy(name)
        handles.pop(name, None)
        print(f"deleted {name}")

    def _logs(self, client: Client, name: str) -> None:
        api = client.api(name)
        status = api.status()
        print(f"{name} v{status['version']} {status['state']}")
        if status.get("error"):
            print(status["error"].get("traceback") or status["error"].get("message"))
        failed = api.workloads(status="failed", limit=10)
        for workload in failed:
            error = workload.get("error") or {}
            print(
                f"--- {workload['id']} failed at {workload.get('finished_at')}: "
                f"{error.get('type')}: {error.get('message')}"
            )
            print(error.get("traceback", ""))
        if not failed and not status.get("error"):
            print("no errors")
