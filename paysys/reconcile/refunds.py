"""Reconciliation of refunds (docs/refunds.md), read-only; called by ``checks.reconcile``.

Per order: Σ refunds (SUCCEEDED and PENDING) ≤ paid, and the order's ``refunded_amount`` /
``refunding_amount`` equal its SUCCEEDED / PENDING refunds. Each SUCCEEDED refund of an order has
its merchant debit (POSTED under its TCC xid, for its amount), its points reversal (when the try
took points), its voucher and its notification; a FAILED one moved no money (nothing POSTED
under its xid, no voucher). What a refund lacks is in flight while it finished moments ago or its
``refund.finished`` is still in the outbox.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q

from accounting.models import Voucher
from accounts.models import Direction, EntryKind, FundEntry, PointsEntry
from notifications.models import Notification
from orders.models import Order, Refund
from paysys.contracts import RefundFinished
from paysys.messaging.models import Message


def check_refunds(report, recent) -> None:
    refunds = list(Refund.objects.filter(kind=Refund.Kind.ORDER).order_by("pk"))
    report.checked["refunds"] += len(refunds)
    _check_orders(report, refunds)
    final = [r for r in refunds if r.status != Refund.Status.PENDING]
    xids = [r.tcc_xid for r in final]
    debits = _posted(
        FundEntry.objects.filter(
            direction=Direction.DEBIT, account__owner_type="merchant", xid__in=xids
        ),
        "amount",
    )
    reversals = _posted(
        PointsEntry.objects.filter(direction=Direction.DEBIT, xid__in=xids), "points"
    )
    took_points = set(
        PointsEntry.objects.filter(
            direction=Direction.DEBIT, kind=EntryKind.HOLD, xid__in=xids
        ).values_list("xid", flat=True)
    )
    vouchers = set(
        Voucher.objects.filter(
            source__in=[f"{RefundFinished.TOPIC}:{r.refund_no}" for r in final]
        ).values_list("source", flat=True)
    )
    notified = set(
        Notification.objects.filter(event_type__startswith="refund.").values_list(
            "event_type", flat=True
        )
    )
    unconsumed = _finished_not_consumed()
    for refund in final:
        voucher = f"{RefundFinished.TOPIC}:{refund.refund_no}" in vouchers
        if refund.status == Refund.Status.FAILED:
            if debits.get(refund.tcc_xid) or reversals.get(refund.tcc_xid) or voucher:
                report.problem(
                    "failed refund", f"refund {refund.refund_no}: money moved for a FAILED refund"
                )
            continue
        missing = []
        if debits.get(refund.tcc_xid, []) != [refund.amount]:
            missing.append("merchant debit")
        if refund.tcc_xid in took_points and len(reversals.get(refund.tcc_xid, [])) != 1:
            missing.append("points reversal")
        if not voucher:
            missing.append("voucher")
        if f"refund.succeeded:{refund.refund_no}" not in notified:
            missing.append("notification")
        for check in missing:
            if (
                refund.finished_at and refund.finished_at > recent
            ) or refund.refund_no in unconsumed:
                report.in_flight[f"refunds awaiting their {check}"] += 1
            else:
                report.problem(
                    f"refund {check}",
                    f"refund {refund.refund_no} (SUCCEEDED): no {check}, or not its amount",
                )
    report.in_flight["refunds PENDING"] += sum(r.status == Refund.Status.PENDING for r in refunds)


def _check_orders(report, refunds) -> None:
    sums: dict[int, dict[str, int]] = defaultdict(
        lambda: {"SUCCEEDED": 0, "PENDING": 0, "FAILED": 0}
    )
    for refund in refunds:
        sums[refund.order_id][refund.status] += refund.amount
    for order in Order.objects.filter(
        Q(pk__in=list(sums)) | Q(refunded_amount__gt=0) | Q(refunding_amount__gt=0)
    ):
        got = sums[order.pk]
        if got["SUCCEEDED"] + got["PENDING"] > order.amount:
            report.problem(
                "refunds vs paid",
                f"order {order.out_trade_no}: refunds {got} pass the paid {order.amount}",
            )
        if (order.refunded_amount, order.refunding_amount) != (got["SUCCEEDED"], got["PENDING"]):
            report.problem(
                "order refunded amount",
                f"order {order.out_trade_no}: refunded {order.refunded_amount} "
                f"pending {order.refunding_amount}, its refunds say {got}",
            )


def _posted(entries, column: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for xid, value in (
        entries.filter(kind=EntryKind.POSTED).order_by("pk").values_list("xid", column)
    ):
        found[xid].append(value)
    return found


def _finished_not_consumed() -> set[str]:
    return set(
        Message.objects.using("orders")
        .filter(
            topic=RefundFinished.TOPIC,
            status__in=[Message.Status.SENDING, Message.Status.PREPARED, Message.Status.DEAD],
        )
        .values_list("payload__refund_no", flat=True)
    )


def refund_holds_awaiting_bank(report, holds: list[dict]) -> list[dict]:
    """Of holds whose TCC transaction is finished, those of a bank refund still PENDING are in
    flight (the bank has not answered: their confirm kept them on purpose); the others are returned."""
    awaiting = (
        set(
            Refund.objects.filter(
                tcc_xid__in={e["xid"] for e in holds}, status=Refund.Status.PENDING
            ).values_list("tcc_xid", flat=True)
        )
        if holds
        else set()
    )
    for e in holds:
        if e["xid"] in awaiting:
            report.in_flight["refund holds awaiting the bank's answer"] += 1
    return [e for e in holds if e["xid"] not in awaiting]
