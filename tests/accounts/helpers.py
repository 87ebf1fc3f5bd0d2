"""Running the accounts participants' phases as the TCC framework would, and reading results."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models import Case, F, Sum, When

from accounts.models import Direction, EntryKind, FundAccount, FundEntry
from paysys.tcc.registry import BranchOp, get_participant


def new_xid() -> str:
    return uuid.uuid4().hex


def phase(action: str, op: str, payload: dict, xid: str) -> None:
    """One phase of ``action`` in its own ``atomic(using=<alias>)``, as the framework runs it."""
    batch(action, op, [BranchOp(xid, payload)])


def batch(action: str, op: str, ops: list[BranchOp]) -> None:
    """One phase of many branches of ``action`` in one ``atomic(using=<alias>)`` (no barrier)."""
    spec = get_participant(action)
    with transaction.atomic(using=spec.alias):
        spec.apply(op, ops)


def fund_payload(owner_type: str, owner_id: int, amount: int, **extra) -> dict:
    return {
        "owner_type": owner_type,
        "owner_id": owner_id,
        "amount": amount,
        "currency": "CNY",
        **extra,
    }


def account(owner_type: str, owner_id: int) -> FundAccount:
    return FundAccount.objects.using("funds").get(
        owner_type=owner_type, owner_id=owner_id, currency="CNY"
    )


def posted_sum(acc: FundAccount) -> int:
    """Σ posted credits − Σ posted debits of the account's entries."""
    return (
        FundEntry.objects.using("funds")
        .filter(account=acc, kind=EntryKind.POSTED)
        .aggregate(
            total=Sum(
                Case(When(direction=Direction.CREDIT, then=F("amount")), default=-F("amount"))
            )
        )["total"]
        or 0
    )
