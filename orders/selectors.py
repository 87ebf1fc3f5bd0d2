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


def order_list(
    *,
    merchant: Merchant,
    status: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Order]:
    qs = Order.objects.filter(merchant_id=merchant.pk)
    if status:
        qs = qs.filter(status=status)
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs
