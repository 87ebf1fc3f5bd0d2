"""Reads of the TCC coordinator for operators (admin's trace and overview)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Min

from paysys.core.series import per_minute
from paysys.tcc.models import GlobalTransaction, TransactionBranch

Status = GlobalTransaction.Status


def transaction_get(*, xid: str) -> GlobalTransaction | None:
    return GlobalTransaction.objects.filter(xid=xid).first()


def transactions_of(
    business_keys: list[str],
) -> list[tuple[GlobalTransaction, list[TransactionBranch]]]:
    """Every attempt of the keys (index of the unique (business_key, attempt)), with its branches."""
    transactions = list(
        GlobalTransaction.objects.filter(business_key__in=business_keys).order_by(
            "created_at", "id"
        )
    )
    branches: dict[int, list[TransactionBranch]] = {}
    for branch in TransactionBranch.objects.filter(gtx__in=transactions).order_by("branch_no"):
        branches.setdefault(branch.gtx_id, []).append(branch)
    return [(gtx, branches.get(gtx.pk, [])) for gtx in transactions]


def phase_two_backlog() -> dict[str, tuple[int, datetime | None]]:
    """participant service (the action's prefix: ``funds`` of ``funds.credit``) -> (unfinished
    branches of decided transactions, the oldest of their decisions). Index (status, action)."""
    rows = (
        TransactionBranch.objects.filter(
            status__in=TransactionBranch.UNFINISHED, gtx__status__in=GlobalTransaction.PHASE_TWO
        )
        .order_by()
        .values_list("action")
        .annotate(n=Count("id"), oldest=Min("gtx__decided_at"))
    )
    backlog: dict[str, tuple[int, datetime | None]] = {}
    for action, n, oldest in rows:
        service = action.split(".", 1)[0]
        count, first = backlog.get(service, (0, None))
        backlog[service] = (
            count + n,
            oldest if first is None or (oldest and oldest < first) else first,
        )
    return backlog


def needs_human_count() -> int:
    return GlobalTransaction.objects.filter(needs_human=True).count()


def transactions_per_minute(*, now: datetime) -> dict[str, list[int]]:
    """status -> transactions begun in each minute of the last hour (index on created_at)."""
    return per_minute(GlobalTransaction.objects.all(), "created_at", now=now, by="status")


def transaction_statuses(xids) -> dict[str, str]:
    """xid -> status of those that exist (unique index on xid)."""
    return dict(GlobalTransaction.objects.filter(xid__in=set(xids)).values_list("xid", "status"))


def needing_human_count() -> int:
    return GlobalTransaction.objects.filter(needs_human=True).count()
