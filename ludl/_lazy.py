"""Lazy public names for package `__init__` files, so importing a package does not import its heavy modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, public: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `public[name]` (a module path) on first access of `name`."""

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
