"""TCC branch contracts: the payload of every participant action, written once.

The initiator builds a contract and sends ``tcc.Branch(contract.ACTION, contract.to_payload())``;
the framework stores the payload in the branch row and hands the same payload to try, confirm
and cancel, which call ``Contract.from_payload(payload)`` before touching anything. A payload
that does not match raises ``InvalidInput`` naming each wrong field: a business refusal, so the
try fails for good and the transaction cancels (a bug in the initiator is never retried).

Versions as in ``paysys.contracts.messages``: a payload without ``"v"`` is version 1, keys a
participant does not know are ignored. Version 1 payloads carry no ``"v"`` and leave out the
optional fields at their default (a payment's credit has no ``reason``), so they are the bytes
initiators stored before these contracts existed: branch rows in flight across an upgrade parse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import ClassVar, Self

from paysys.contracts.shape import read_fields
from paysys.core.errors import InvalidInput
from paysys.core.money import MAX_AMOUNT

# a bank refund's holds wait for the bank's answer ("later"); a balance payment's post at once
SETTLE = ("now", "later")
PAY_METHODS = ("bank", "balance")
FUND_OWNERS = ("merchant", "payer")

Rule = tuple[str, Callable[[object], bool]]  # (what the field must be, its test once typed)


def _between(low: int, high: int = MAX_AMOUNT) -> Callable[[object], bool]:
    return lambda value: low <= value <= high


def _one_of(values: tuple[str, ...]) -> Rule:
    return f"one of {', '.join(values)}", lambda value: value in values


def _at_most(length: int) -> Rule:
    return f"at most {length} characters", lambda value: len(value) <= length


POSITIVE_ID: Rule = ("a positive integer", lambda value: value >= 1)
NON_NEGATIVE: Rule = ("a non-negative integer", _between(0))
AMOUNT: Rule = (f"an integer between 1 and {MAX_AMOUNT} (minor units)", _between(1))
CURRENCY: Rule = ("an ISO 4217 code", lambda value: len(value) == 3 and value.isupper())
OUT_TRADE_NO, REASON = _at_most(32), _at_most(255)


@dataclass(frozen=True, kw_only=True)
class BranchContract:
    ACTION: ClassVar[str]  # the participant action the payload is for
    VERSION: ClassVar[int] = 1  # the version initiators send
    ACCEPTS: ClassVar[frozenset[int]] = frozenset({1})  # the versions participants read
    # field -> its rule: a field of the wrong type, missing, or failing its test is named with
    # what it must be
    RULES: ClassVar[dict[str, Rule]] = {}

    def to_payload(self) -> dict:
        payload = {} if self.VERSION == 1 else {"v": self.VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or value != f.default:
                payload[f.name] = value
        return payload

    @classmethod
    def from_payload(cls, payload) -> Self:
        if not isinstance(payload, dict):
            raise InvalidInput(f"{cls.ACTION} payload must be an object")
        version = payload.get("v", 1)
        if version not in cls.ACCEPTS:
            raise InvalidInput(
                f"{cls.ACTION} payload version {version!r} is not one of {sorted(cls.ACCEPTS)}",
                fields={"v": f"one of {sorted(cls.ACCEPTS)}"},
            )
        values, problems = read_fields(cls, payload)
        for name, (must, test) in cls.RULES.items():
            if name in problems or (name in values and not test(values[name])):
                problems[name] = must
        if problems:
            raise InvalidInput(f"invalid {cls.ACTION} payload", fields=problems)
        return cls(**values)


# --- funds ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FundMove(BranchContract):
    """Money into or out of one fund account (also what a caller hands the funds services)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "owner_type": _one_of(FUND_OWNERS),
        "owner_id": POSITIVE_ID,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "out_trade_no": OUT_TRADE_NO,
        "reason": REASON,
    }

    out_trade_no: str = ""
    currency: str
    owner_type: str  # merchant | payer
    owner_id: int
    amount: int  # minor units
    reason: str = ""


class FundCredit(FundMove):
    """``funds.credit``: a merchant's share of a payment, or a payer's wallet refunded."""

    ACTION = "funds.credit"


class FundDebit(FundMove):
    """``funds.debit``: a payer's wallet pays (the try refuses it with InsufficientFunds)."""

    ACTION = "funds.debit"


@dataclass(frozen=True, kw_only=True)
class FundRefund(FundMove):
    """``funds.refund``: a merchant gives a refund's amount back, frozen by the try; posted by the
    confirm when ``settle`` is "now", else held for the bank's answer (``refund.finished``)."""

    ACTION: ClassVar[str] = "funds.refund"
    RULES: ClassVar[dict[str, Rule]] = {**FundMove.RULES, "settle": _one_of(SETTLE)}

    settle: str


# --- points --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PointsAward(BranchContract):
    """``points.award``: a payment's points (``paysys.core.money.points_for``); 0 changes nothing."""

    ACTION: ClassVar[str] = "points.award"
    RULES: ClassVar[dict[str, Rule]] = {
        "payer_id": POSITIVE_ID,
        "points": (f"an integer between 0 and {MAX_AMOUNT}", _between(0)),
        "out_trade_no": OUT_TRADE_NO,
        "reason": REASON,
    }

    out_trade_no: str = ""
    currency: str = ""  # the payment's, whose whole units earned the points
    payer_id: int
    points: int
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class PointsReversal(PointsAward):
    """``points.reverse``: a refund takes points back, never below zero; ``settle`` as
    :class:`FundRefund`'s."""

    ACTION: ClassVar[str] = "points.reverse"
    RULES: ClassVar[dict[str, Rule]] = {**PointsAward.RULES, "settle": _one_of(SETTLE)}

    settle: str


# --- orders --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OrderPayment(BranchContract):
    """``orders.pay``: one payment of an order. Fee and points are computed once by the initiator
    and carried here, so ``order.paid`` says what funds credited and points awarded."""

    ACTION: ClassVar[str] = "orders.pay"
    RULES: ClassVar[dict[str, Rule]] = {
        "amount": AMOUNT,
        "method": _one_of(PAY_METHODS),
        "fee": NON_NEGATIVE,
        "points": NON_NEGATIVE,
    }

    out_trade_no: str
    currency: str
    amount: int  # minor units
    method: str  # bank | balance
    bank_trade_no: str  # "" for a balance payment
    paid_at: str  # ISO 8601; "" for a balance payment: paid when confirmed
    source: str  # notify | poll for a bank payment
    fee: int
    points: int
    notify_url: str


@dataclass(frozen=True, kw_only=True)
class OrderRefund(BranchContract):
    """``orders.refund``: one refund of a paid order (the refund row is inserted by the try)."""

    ACTION: ClassVar[str] = "orders.refund"
    RULES: ClassVar[dict[str, Rule]] = {
        "amount": AMOUNT,
        "method": _one_of(PAY_METHODS),
        "points": NON_NEGATIVE,
    }

    out_trade_no: str
    currency: str
    refund_no: str
    merchant_id: int
    merchant_refund_no: str
    amount: int  # minor units
    reason: str
    method: str  # bank | balance: the payment's, where the money goes back
    points: int  # the points the refund reverses, reckoned by the initiator
    requested_by: str
    notify_url: str


# --- core ------------------------------------------------------------------------------------


def _iso_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10  # YYYY-MM-DD, as date.isoformat() writes it


@dataclass(frozen=True, kw_only=True)
class AgreementCharge(BranchContract):
    """``core.agreement``: one balance payment counted against the payer's agreement with the
    merchant, on the day it was authorised (a calendar day in ``TIME_ZONE``)."""

    ACTION: ClassVar[str] = "core.agreement"
    RULES: ClassVar[dict[str, Rule]] = {
        "agreement_id": POSITIVE_ID,
        "payer_id": POSITIVE_ID,
        "merchant_id": POSITIVE_ID,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "day": ("an ISO 8601 date (YYYY-MM-DD)", _iso_date),
        "out_trade_no": OUT_TRADE_NO,
    }

    agreement_id: int
    token_prefix: str  # the token the payment was authorised with: a reissue since refuses the try
    payer_id: int
    merchant_id: int
    amount: int  # minor units
    currency: str
    day: str  # YYYY-MM-DD
    out_trade_no: str
