"""Reads of the funds and points services."""

from __future__ import annotations

from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Sum, When

from accounts.models import Direction, EntryKind, FundAccount, FundEntry, PointsAccount, PointsEntry
from paysys.core.models import Merchant

FUNDS = "funds"
POINTS = "points"


def merchant_balance(*, merchant: Merchant, currency: str) -> dict:
    """``{"currency", "available", "frozen", "pending_in"}``; zeros before the first credit."""
    account = (
        FundAccount.objects.using(FUNDS)
        .filter(owner_type=FundAccount.Owner.MERCHANT, owner_id=merchant.pk, currency=currency)
        .first()
    )
    if account is None:
        return {"currency": currency, "available": 0, "frozen": 0, "pending_in": 0}
    return {
        "currency": currency,
        "available": account.available,
        "frozen": account.frozen,
        "pending_in": account.pending_in,
    }


def merchant_entry_list(*, merchant: Merchant, currency: str) -> QuerySet[FundEntry]:
    """The merchant's balance history: posted entries only (holds show in frozen / pending_in)."""
    return FundEntry.objects.using(FUNDS).filter(
        account__owner_type=FundAccount.Owner.MERCHANT,
        account__owner_id=merchant.pk,
        account__currency=currency,
        kind=EntryKind.POSTED,
    )


def fund_account_get(*, owner_type: str, owner_id: int, currency: str) -> FundAccount | None:
    return (
        FundAccount.objects.using(FUNDS)
        .filter(owner_type=owner_type, owner_id=owner_id, currency=currency)
        .first()
    )


def points_account_get(*, payer_id: int) -> PointsAccount | None:
    return PointsAccount.objects.using(POINTS).filter(payer_id=payer_id).first()


def fund_account_mismatches() -> list[dict]:
    """Fund accounts whose columns differ from their entries (reconciliation: expect none).

    balance = Σ posted credits − Σ posted debits; frozen = debit holds − their posts and
    releases; pending_in = credit holds − their releases and the posts of those holds (a
    manual credit is posted without a hold: it has no xid)."""
    sums = {
        row["account"]: row
        for row in FundEntry.objects.using(FUNDS)
        .values("account")
        .annotate(
            balance=Sum(
                Case(
                    When(kind=EntryKind.POSTED, direction=Direction.CREDIT, then=F("amount")),
                    When(kind=EntryKind.POSTED, direction=Direction.DEBIT, then=-F("amount")),
                    default=0,
                )
            ),
            frozen=Sum(
                Case(
                    When(kind=EntryKind.HOLD, direction=Direction.DEBIT, then=F("amount")),
                    When(~Q(kind=EntryKind.HOLD), direction=Direction.DEBIT, then=-F("amount")),
                    default=0,
                )
            ),
            pending_in=Sum(
                Case(
                    When(kind=EntryKind.HOLD, direction=Direction.CREDIT, then=F("amount")),
                    When(
                        ~Q(kind=EntryKind.HOLD),
                        xid__isnull=False,
                        direction=Direction.CREDIT,
                        then=-F("amount"),
                    ),
                    default=0,
                )
            ),
        )
    }
    mismatches = []
    for account in FundAccount.objects.using(FUNDS).order_by("pk"):
        expected = sums.get(account.pk, {"balance": 0, "frozen": 0, "pending_in": 0})
        actual = {
            "balance": account.balance,
            "frozen": account.frozen,
            "pending_in": account.pending_in,
        }
        if any((expected[k] or 0) != v for k, v in actual.items()):
            mismatches.append(
                {
                    "account": account.pk,
                    "owner": str(account),
                    "actual": actual,
                    "from_entries": {k: expected[k] or 0 for k in actual},
                }
            )
    return mismatches


def points_account_mismatches() -> list[dict]:
    """Points accounts whose balance / pending / frozen differ from their entries (expect none):
    awards are credits (pending), refunds' reversals debits (frozen)."""
    credit, debit = Q(direction=Direction.CREDIT), Q(direction=Direction.DEBIT)
    sums = {
        row["account"]: row
        for row in PointsEntry.objects.using(POINTS)
        .values("account")
        .annotate(
            balance=Sum(
                Case(
                    When(credit, kind=EntryKind.POSTED, then=F("points")),
                    When(debit, kind=EntryKind.POSTED, then=-F("points")),
                    default=0,
                )
            ),
            pending=Sum(
                Case(
                    When(credit, kind=EntryKind.HOLD, then=F("points")),
                    When(credit, then=-F("points")),
                    default=0,
                )
            ),
            frozen=Sum(
                Case(
                    When(debit, kind=EntryKind.HOLD, then=F("points")),
                    When(debit, then=-F("points")),
                    default=0,
                )
            ),
        )
    }
    mismatches = []
    for account in PointsAccount.objects.using(POINTS).order_by("pk"):
        expected = sums.get(account.pk, {"balance": 0, "pending": 0, "frozen": 0})
        actual = {"balance": account.balance, "pending": account.pending, "frozen": account.frozen}
        if any((expected[k] or 0) != v for k, v in actual.items()):
            mismatches.append(
                {
                    "account": account.pk,
                    "owner": str(account),
                    "actual": actual,
                    "from_entries": {k: expected[k] or 0 for k in actual},
                }
            )
    return mismatches


# --- reconciliation (paysys.reconcile): the postings and holds TCC transactions left ----------

FUND_COLUMNS = (
    "pk",
    "out_trade_no",
    "xid",
    "direction",
    "kind",
    "amount",
    "account__owner_type",
    "account__owner_id",
    "account__currency",
)
POINTS_COLUMNS = ("pk", "out_trade_no", "xid", "kind", "points", "account__payer_id")


def fund_postings(*, out_trade_nos=None) -> QuerySet:
    """Balance moves made by a TCC confirm (a manual credit has no xid), as dicts of FUND_COLUMNS:
    all (for ``paysys.core.sql.pk_batches``) or those of these orders (index fundentry_order)."""
    rows = FundEntry.objects.using(FUNDS).filter(kind=EntryKind.POSTED, xid__isnull=False)
    if out_trade_nos is not None:
        rows = rows.filter(out_trade_no__in=list(out_trade_nos))
    return rows.values(*FUND_COLUMNS).order_by("pk")


def points_postings(*, out_trade_nos=None) -> QuerySet:
    """Points awarded by a TCC confirm, as dicts of POINTS_COLUMNS (index pointsentry_order); a
    refund's reversals (debits) are reconciled with their refunds (paysys/reconcile/refunds.py)."""
    rows = PointsEntry.objects.using(POINTS).filter(
        kind=EntryKind.POSTED, direction=Direction.CREDIT, xid__isnull=False
    )
    if out_trade_nos is not None:
        rows = rows.filter(out_trade_no__in=list(out_trade_nos))
    return rows.values(*POINTS_COLUMNS).order_by("pk")


def open_fund_holds(*, pks=None) -> QuerySet:
    """Holds neither posted nor released yet (what frozen / pending_in are the sum of): HOLD
    entries without a later entry of the same account, xid and direction (the unique
    fundentry_unique_phase index answers each); all, or those of these entry ids."""
    closed = FundEntry.objects.using(FUNDS).filter(
        account=OuterRef("account"),
        xid=OuterRef("xid"),
        direction=OuterRef("direction"),
        kind__in=[EntryKind.POSTED, EntryKind.RELEASED],
    )
    rows = FundEntry.objects.using(FUNDS).filter(kind=EntryKind.HOLD).filter(~Exists(closed))
    return (rows if pks is None else rows.filter(pk__in=list(pks))).values(*FUND_COLUMNS)


def open_points_holds(*, pks=None) -> QuerySet:
    """Award holds neither posted nor released yet (what pending is the sum of)."""
    closed = PointsEntry.objects.using(POINTS).filter(
        account=OuterRef("account"),
        xid=OuterRef("xid"),
        kind__in=[EntryKind.POSTED, EntryKind.RELEASED],
    )
    rows = PointsEntry.objects.using(POINTS).filter(kind=EntryKind.HOLD).filter(~Exists(closed))
    return (rows if pks is None else rows.filter(pk__in=list(pks))).values(*POINTS_COLUMNS)
