"""Import-linter contract types of our own (`make lint` runs them with the built-in ones).

- `private_names`: no module imports another module's `_private` name.
- `only_imports`: a package imports, of another root package, nothing but the modules named.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass

import grimp
from importlinter import Contract, ContractCheck, fields, output


@dataclass(frozen=True, order=True)
class PrivateImport:
    importer: str
    line: int
    imported: str
    name: str


def _source_of(module: str) -> tuple[str, bool] | None:
    """(source text, is a package) of an importable module."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as source:
        return source.read(), spec.submodule_search_locations is not None


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class PrivateNamesContract(Contract):
    """`from x import _name` is refused wherever x is a module of `packages` other than the
    importer itself: a private name is its module's own business."""

    type_name = "private_names"
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        packages = [str(p) for p in self.packages]  # type: ignore[attr-defined]
        found: list[PrivateImport] = []
        for module in sorted(graph.modules):
            if not any(module == p or module.startswith(p + ".") for p in packages):
                continue
            source = _source_of(module)
            if source is None:
                continue
            text, is_package = source
            for node in ast.walk(ast.parse(text)):
                if not isinstance(node, ast.ImportFrom):
                    continue
                imported = _absolute(module, is_package, node)
                if imported == module or imported.split(".")[0] not in packages:
                    continue
                found += [
                    PrivateImport(module, node.lineno, imported, alias.name)
                    for alias in node.names
                    if _is_private(alias.name)
                ]
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for entry in check.metadata["found"]:
            output.print_error(
                f"{entry.importer}:{entry.line} imports {entry.imported}.{entry.name}, "
                "a private name of another module",
                bold=False,
            )
            output.new_line()


class OnlyImportsContract(Contract):
    """`source_modules` (and everything inside them) import, of the root package `of`, only
    `allowed_modules` and what is inside those."""

    type_name = "only_imports"
    source_modules = fields.ListField(subfield=fields.StringField())
    of = fields.StringField()
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        sources = [str(s) for s in self.source_modules]  # type: ignore[attr-defined]
        root = str(self.of)
        allowed = [str(a) for a in self.allowed_modules]  # type: ignore[attr-defined]

        def within(module: str, packages: list[str]) -> bool:
            return any(module == p or module.startswith(p + ".") for p in packages)

        refused = []
        for importer in sorted(graph.modules):
            if not within(importer, sources):
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if within(imported, [root]) and not within(imported, allowed):
                    for detail in graph.get_import_details(importer=importer, imported=imported):
                        refused.append((importer, detail["line_number"], imported))
        return ContractCheck(kept=not refused, metadata={"refused": refused})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, line, imported in check.metadata["refused"]:
            output.print_error(f"{importer}:{line} imports {imported}", bold=False)
            output.new_line()
