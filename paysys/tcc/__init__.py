"""The TCC framework's public face: ``from paysys import tcc``; ``tcc.participant(...)``,
``tcc.run(...)``, ``tcc.run_many(...)``, ``tcc.many``, ``tcc.Branch``, ``tcc.Outcome``, ``tcc.TryFailed``. See docs/tcc.md
(its last section, "Reference: the coordinator in detail").

Names resolve lazily (this package is also a Django app, imported before models are ready).
Domains import from here only, never from the modules behind it.
"""

from __future__ import annotations

from paysys.core.lazy import lazy_exports

_EXPORTS = {
    "participant": "paysys.tcc.registry",
    "many": "paysys.tcc.registry",
    "BranchOp": "paysys.tcc.registry",
    "transaction_names": "paysys.tcc.registry",
    "Branch": "paysys.tcc.coordinator",
    "Outcome": "paysys.tcc.coordinator",
    "TryFailed": "paysys.tcc.coordinator",
    "run": "paysys.tcc.coordinator",
    "run_many": "paysys.tcc.coordinator",
    "confirmed_key": "paysys.tcc.coordinator",
    "recover_tcc": "paysys.tcc.recovery",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
