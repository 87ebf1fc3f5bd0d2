from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from paysys.core.errors import NotFound
from paysys.core.models import Merchant
from orders.models import Order


def order_get(*, merchant: Merchant, merchant_order_no: str) -> Order:
    """The merchant's own order; another merchant's order is indistinguishable from a missing one."""
    order = Order.objects.filter(merchant_id=merchant.pk, merchant_order_no=merchant_order_no).first()
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
