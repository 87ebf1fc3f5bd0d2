from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from orders.models import Order, PaymentRecord, Refund
from paysys.core.errors import NotFound
from paysys.core.models import Merchant
from paysys.core.series import per_minute


def order_get(*, merchant: Merchant, merchant_order_no: str) -> Order:
    """The merchant's own order; another merchant's order is indistinguishable from a missing one."""
    order = Order.objects.filter(
        merchant_id=merchant.pk, merchant_order_no=merchant_order_no
    ).first()
    if order is None:
        raise NotFound("no such order")
    return order


def order_notify_url(order: Order, merchant: Merchant) -> str:
    """Where the merchant is told the order was paid: the order's own URL, else the merchant's."""
    return order.notify_url or merchant.notify_url


def order_list(
    *,
    merchant: Merchant,
    out_trade_no: str | None = None,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Order]:
    qs = Order.objects.filter(merchant_id=merchant.pk)
    if out_trade_no is not None:
        qs = qs.filter(out_trade_no=out_trade_no)
    if status:
        qs = qs.filter(status=status)
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


# --- operations (admin's trace and overview: staff see every merchant's orders) --------------


def orders_find(q: str) -> list[Order]:
    """Orders ``q`` names: an out_trade_no (unique), else a merchant_order_no of any merchant
    (a scan: no index serves it without the merchant, acceptable for a human's search)."""
    by_out_trade_no = list(Order.objects.filter(out_trade_no=q))
    return by_out_trade_no or list(Order.objects.filter(merchant_order_no=q).order_by("-id")[:20])


def refunds_find(q: str) -> list[Refund]:
    """Refunds ``q`` names: a refund_no or a TCC xid (unique), else a merchant_refund_no of any
    merchant (a scan, as orders_find's, for a human's search)."""
    exact = list(Refund.objects.filter(refund_no=q)) or list(Refund.objects.filter(tcc_xid=q))
    return exact or list(Refund.objects.filter(merchant_refund_no=q).order_by("-id")[:20])


def refunds_of(*, out_trade_no: str) -> list[Refund]:
    return list(Refund.objects.filter(out_trade_no=out_trade_no).order_by("created_at", "id"))


def payment_records_of(*, out_trade_no: str) -> list[PaymentRecord]:
    return list(
        PaymentRecord.objects.filter(out_trade_no=out_trade_no).order_by("created_at", "id")
    )


def payment_record_get(*, bank_trade_no: str) -> PaymentRecord | None:
    return PaymentRecord.objects.filter(bank_trade_no=bank_trade_no).first()


def order_status_for_bank(*, out_trade_no: str) -> tuple[str | None, bool]:
    """(status, payable) of an order as the bank may know it: payable only while CREATED (PAYING:
    a payment is being completed; SUCCESS: paid; CLOSED, FAILED: never again). Unknown: (None, False)."""
    status = (
        Order.objects.filter(out_trade_no=out_trade_no).values_list("status", flat=True).first()
    )
    return status, status == Order.Status.CREATED


def orders_created_per_minute(*, now: datetime) -> list[int]:
    """Orders created in each minute of the last hour (index on created_at)."""
    return per_minute(Order.objects.all(), "created_at", now=now).get("", [0] * 60)


# --- reconciliation (paysys.reconcile) ---------------------------------------------------------


def paid_orders() -> QuerySet[Order]:
    """Paid orders (SUCCESS, or refunded since), with the columns reconciliation compares (for ``pk_batches``)."""
    return (
        Order.objects.filter(status__in=Order.PAID_STATUSES)
        .only(
            "out_trade_no", "amount", "currency", "pay_method", "tcc_xid", "paid_at", "updated_at"
        )
        .order_by("pk")
    )


def order_states(out_trade_nos) -> dict[str, tuple[str, str]]:
    """out_trade_no -> (status, tcc_xid) of those that exist (unique index on out_trade_no)."""
    rows = Order.objects.filter(out_trade_no__in=set(out_trade_nos)).values_list(
        "out_trade_no", "status", "tcc_xid"
    )
    return {out_trade_no: (status, xid) for out_trade_no, status, xid in rows}


def orders_paying_count() -> int:
    return Order.objects.filter(status=Order.Status.PAYING).count()


def flagged_payments_unreviewed_count() -> int:
    return PaymentRecord.objects.filter(
        outcome=PaymentRecord.Outcome.FLAGGED, reviewed_at__isnull=True
    ).count()
