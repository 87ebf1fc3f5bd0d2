"""Running the accounts participants' phases as the TCC framework would, and reading results."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models import Case, F, Sum, When

from accounts import participants
from accounts.models import Direction, EntryKind, FundAccount, FundEntry

ALIAS = {"funds.credit": "funds", "funds.debit": "funds", "points.award": "points"}
OPS = {
    "funds.credit": (participants.credit_try, participants.credit_confirm, participants.credit_cancel),
    "funds.debit": (participants.debit_try, participants.debit_confirm, participants.debit_cancel),
    "points.award": (participants.award_try, participants.award_confirm, participants.award_cancel),
}


def new_xid() -> str:
    return uuid.uuid4().hex


def phase(action: str, op: str, payload: dict, xid: str) -> None:
    """One phase of ``action`` in its own ``atomic(using=<alias>)``, as the framework runs it."""
    fn = dict(zip(("try", "confirm", "cancel"), OPS[action]))[op]
    with transaction.atomic(using=ALIAS[action]):
        fn(payload, xid=xid)


def fund_payload(owner_type: str, owner_id: int, amount: int, **extra) -> dict:
    return {"owner_type": owner_type, "owner_id": owner_id, "amount": amount, "currency": "CNY", **extra}


def account(owner_type: str, owner_id: int) -> FundAccount:
    return FundAccount.objects.using("funds").get(owner_type=owner_type, owner_id=owner_id, currency="CNY")


def posted_sum(acc: FundAccount) -> int:
    """Σ posted credits − Σ posted debits of the account's entries."""
    return FundEntry.objects.using("funds").filter(account=acc, kind=EntryKind.POSTED).aggregate(
        total=Sum(Case(When(direction=Direction.CREDIT, then=F("amount")), default=-F("amount")))
    )["total"] or 0
