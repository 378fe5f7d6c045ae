"""How a predictor class travels to the workers: cloudpickled, by value where workers could
not import its module (a notebook, a script, a test file)."""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import cloudpickle


def _installed_roots() -> list[Path]:
    roots = [Path(p) for p in [*site.getsitepackages(), site.getusersitepackages()]]
    roots += [Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib")]
    return [r.resolve() for r in roots if r]


def _is_user_module(module: ModuleType) -> bool:
    """Code that workers cannot import (a notebook, a script, a test file) goes by value."""
    filename = getattr(module, "__file__", None)
    if not filename:
        return False
    path = Path(filename).resolve()
    return not any(path.is_relative_to(root) for root in _installed_roots())


def pickle_predictor(cls: type) -> bytes:
    """cloudpickle the class so that worker processes can rebuild it without the source."""
    module = sys.modules.get(cls.__module__)
    by_value = module is not None and cls.__module__ != "__main__" and _is_user_module(module)
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(cls)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
