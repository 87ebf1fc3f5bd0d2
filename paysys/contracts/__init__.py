"""Contracts: the shape of everything that crosses a database boundary, written once.

``messages``: every message topic and its versioned payload (producers ``publish(event)``,
consumers ``Contract.from_payload``). Importers use ``paysys.contracts``.
"""

from paysys.contracts.messages import (
    BankPaymentSucceeded,
    Contract,
    ContractError,
    OrderPaid,
    RefundFinished,
    RefundRequested,
    WalletCredited,
    contracts,
)

__all__ = [
    "BankPaymentSucceeded",
    "Contract",
    "ContractError",
    "OrderPaid",
    "RefundFinished",
    "RefundRequested",
    "WalletCredited",
    "contracts",
]
