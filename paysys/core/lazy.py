"""Lazy public faces for packages that are also Django apps (imported before models are ready):
``__getattr__ = lazy_exports(__name__, {"name": "package.module", ...})``."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` resolving each exported name from its module on first use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
