"""The reliable message service's public face: ``from paysys.messaging import publish, consumer``.

Names resolve lazily (this package is also a Django app, imported before models are ready).
Domains import from here only, never from the modules behind it.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "publish": "paysys.messaging.services",
    "prepare": "paysys.messaging.services",
    "confirm": "paysys.messaging.services",
    "discard": "paysys.messaging.services",
    "resend": "paysys.messaging.services",
    "resend_dead_messages": "paysys.messaging.services",
    "recover_messages": "paysys.messaging.services",
    "consumer": "paysys.messaging.registry",
    "check_back": "paysys.messaging.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'paysys.messaging' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
