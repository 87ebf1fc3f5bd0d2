"""Message contracts: every topic and the shape of its payload, written once.

Producers build a contract and ``publish(contract)`` (its ``TOPIC``, its ``to_payload()``);
consumers call ``Contract.from_payload(message.payload)`` before touching anything, and tests
import the same classes. A payload that does not match its contract raises
:class:`ContractError`: the consumer's transaction rolls back, the message stays SENDING with the
error and goes DEAD after the resend schedule, never half-applied.

Payloads are versioned (``"v"``). A consumer accepts every version it knows; a payload without
``v`` is version 1 (what was published before versions existed). Keys a consumer does not know
are ignored, so a producer may add optional fields without a new version; removing or changing
a field is a new version, which consumers learn before producers send it (a rolling deploy of
one service never breaks another).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Self

from paysys.contracts.shape import read_fields


class ContractError(ValueError):
    """A payload that does not match its topic's contract."""


@dataclass(frozen=True)
class Contract:
    TOPIC: ClassVar[str]
    PRODUCER: ClassVar[
        str
    ]  # the database alias whose outbox it is published from (/metrics' service label)
    VERSION: ClassVar[int] = 1  # the version producers send
    ACCEPTS: ClassVar[frozenset[int]] = frozenset({1})  # the versions consumers read

    def to_payload(self) -> dict:
        return {"v": self.VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_payload(cls, payload) -> Self:
        if not isinstance(payload, dict):
            raise ContractError(
                f"{cls.TOPIC}: payload must be an object, got {type(payload).__name__}"
            )
        version = payload.get("v", 1)
        if version not in cls.ACCEPTS:
            raise ContractError(
                f"{cls.TOPIC}: version {version!r} is not one of {sorted(cls.ACCEPTS)}"
            )
        values, problems = read_fields(cls, payload)
        if problems:
            raise ContractError(
                f"{cls.TOPIC} v{version}: "
                + "; ".join(f"{name} {problem}" for name, problem in problems.items())
            )
        instance = cls(**values)
        instance.check()
        return instance

    def check(self) -> None:
        """Rules across fields; raise ContractError. Types are already checked."""


# --- the topics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BankPaymentSucceeded(Contract):
    """The bank says a payment succeeded: from the gateway's notify intake, or found by polling.
    Producer: gateway (``default``). Consumer: orders."""

    TOPIC: ClassVar[str] = "bank.payment_succeeded"
    PRODUCER: ClassVar[str] = "default"

    bank_trade_no: str
    out_trade_no: str
    amount: int  # minor units
    currency: str
    paid_at: str  # ISO 8601
    source: str = "notify"  # notify | poll

    def check(self) -> None:
        if self.amount <= 0:
            raise ContractError(f"{self.TOPIC}: amount must be positive, got {self.amount}")


@dataclass(frozen=True)
class OrderPaid(Contract):
    """An order reached SUCCESS. Producer: orders, in the transaction that completes the order.
    Consumers: accounting (voucher), notifications (merchant notify)."""

    TOPIC: ClassVar[str] = "order.paid"
    PRODUCER: ClassVar[str] = "orders"

    order_id: int
    out_trade_no: str
    merchant_id: int
    merchant_order_no: str
    payer_id: int | None
    amount: int  # minor units
    currency: str
    fee: int  # computed once by orders with paysys.core.money.fee_for
    bank_trade_no: str | None  # None for a balance payment
    paid_at: str  # ISO 8601
    notify_url: str = ""
    method: str = "bank"  # bank | balance
    points_awarded: int = 0

    def check(self) -> None:
        if self.amount <= 0 or not 0 <= self.fee <= self.amount:
            raise ContractError(
                f"{self.TOPIC} {self.out_trade_no}: need amount > 0 and 0 <= fee <= amount, "
                f"got {self.amount}, {self.fee}"
            )


@dataclass(frozen=True)
class WalletCredited(Contract):
    """Someone credited a payer's wallet by hand (admin action or ``manage.py credit_wallet``).
    Producer: funds, in the transaction that posts the credit. Consumer: accounting (voucher
    crediting payer wallets, 2241). ``entry_id`` is the fund entry: one voucher per credit."""

    TOPIC: ClassVar[str] = "wallet.credited"
    PRODUCER: ClassVar[str] = "funds"

    entry_id: int
    payer_id: int
    amount: int  # minor units
    currency: str
    reason: str
    credited_by: str  # who: "admin:<username>" or "command:<os user>"
    credited_at: str  # ISO 8601

    def check(self) -> None:
        if self.amount <= 0:
            raise ContractError(
                f"{self.TOPIC} entry {self.entry_id}: amount must be positive, got {self.amount}"
            )


@dataclass(frozen=True)
class RefundFinished(Contract):
    """A refund reached SUCCEEDED or FAILED. Producer: orders, in the transaction that records
    it. Consumers: funds and points (a bank refund's holds posted or released: ``held``),
    accounting (a voucher for a SUCCEEDED one), notifications (``refund.succeeded`` /
    ``refund.failed`` to the merchant)."""

    TOPIC: ClassVar[str] = "refund.finished"
    PRODUCER: ClassVar[str] = "orders"

    refund_id: int
    refund_no: str
    merchant_refund_no: str
    order_id: int
    out_trade_no: str
    merchant_id: int
    merchant_order_no: str
    payer_id: int
    amount: int  # minor units
    currency: str
    status: str  # SUCCEEDED | FAILED
    method: str  # bank | balance: where the money went back
    xid: str  # the TCC transaction that holds (held) or moved the money
    held: bool  # the merchant's debit and the points' reversal are still holds, to post or release
    points: int = (
        0  # points the refund reverses (at most; see accounts.services.points_reverse_hold)
    )
    reason: str = ""
    failure_reason: str = ""
    finished_at: str = ""  # ISO 8601
    notify_url: str = ""
    requested_by: str = "merchant"
    kind: str = "order"  # order | duplicate (a flagged bank payment back to the payer: no merchant money, no voucher)

    def check(self) -> None:
        if self.amount <= 0 or self.status not in ("SUCCEEDED", "FAILED"):
            raise ContractError(
                f"{self.TOPIC} {self.refund_no}: need amount > 0 and a final status"
            )


@dataclass(frozen=True)
class RefundRequested(Contract):
    """A bank payment's refund is held and must be sent to the bank. Producer and consumer:
    orders (its ``polling`` worker, which talks to the bank), so the request survives a bank
    that does not answer: resent until the bank has it."""

    TOPIC: ClassVar[str] = "refund.requested"
    PRODUCER: ClassVar[str] = "orders"

    refund_no: str
    out_trade_no: str
    bank_trade_no: str
    amount: int
    currency: str
    reason: str = ""


def contracts() -> list[type[Contract]]:
    """Every topic's contract."""
    return Contract.__subclasses__()
