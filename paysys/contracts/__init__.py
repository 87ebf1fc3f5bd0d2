"""Contracts: the shape of everything that crosses a database boundary, written once.

``messages``: every message topic and its versioned payload (producers ``publish(event)``,
consumers ``Contract.from_payload``). ``branches``: every TCC participant action's payload
(initiators ``tcc.Branch(c.ACTION, c.to_payload())``, participants ``BranchContract.from_payload``).
Importers use ``paysys.contracts``.
"""

from paysys.contracts.branches import (
    AgreementCharge,
    BranchContract,
    FundCredit,
    FundDebit,
    FundMove,
    FundRefund,
    OrderPayment,
    OrderRefund,
    PointsAward,
    PointsReversal,
)
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
    "AgreementCharge",
    "BankPaymentSucceeded",
    "BranchContract",
    "Contract",
    "ContractError",
    "FundCredit",
    "FundDebit",
    "FundMove",
    "FundRefund",
    "OrderPaid",
    "OrderPayment",
    "OrderRefund",
    "PointsAward",
    "PointsReversal",
    "RefundFinished",
    "RefundRequested",
    "WalletCredited",
    "contracts",
]
