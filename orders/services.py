from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from paysys import bank
from paysys.api.exceptions import ApiError, Conflict
from paysys.core.models import Merchant, Payer
from orders.models import Order

# fields that must match for a replayed create to be "the same order"
IDEMPOTENT_FIELDS = ("amount", "currency", "subject", "payer_id", "notify_url")


def new_out_trade_no() -> str:
    return "PS" + timezone.now().strftime("%Y%m%d") + secrets.token_hex(8).upper()


def order_create(
    *,
    merchant: Merchant,
    merchant_order_no: str,
    amount: int,
    currency: str,
    subject: str,
    payer_id: int,
    notify_url: str = "",
) -> tuple[Order, bool]:
    """Create the merchant's order, idempotently on (merchant, merchant_order_no).

    Returns ``(order, created)``. A replay with identical fields returns the existing order;
    a replay with different fields raises Conflict and changes nothing.
    """
    if currency not in settings.ORDER_CURRENCIES:
        raise ApiError("unsupported currency", fields={"currency": f"one of {', '.join(settings.ORDER_CURRENCIES)}"})
    wanted = {"amount": amount, "currency": currency, "subject": subject, "payer_id": payer_id, "notify_url": notify_url or ""}
    existing = Order.objects.filter(merchant_id=merchant.pk, merchant_order_no=merchant_order_no).first()
    if existing is None:
        if not Payer.objects.filter(pk=payer_id).exists():
            raise ApiError("unknown payer", fields={"payer_id": "no such payer"})
        try:
            with transaction.atomic(using="orders"):
                order = Order.objects.create(
                    out_trade_no=new_out_trade_no(),
                    merchant_id=merchant.pk,
                    merchant_order_no=merchant_order_no,
                    expires_at=timezone.now() + timedelta(seconds=settings.ORDER_EXPIRY_SECONDS),
                    **wanted,
                )
            return order, True
        except IntegrityError:
            # a concurrent create with the same merchant_order_no won the insert
            existing = Order.objects.get(merchant_id=merchant.pk, merchant_order_no=merchant_order_no)
    different = [f for f in IDEMPOTENT_FIELDS if getattr(existing, f) != wanted[f]]
    if different:
        raise Conflict(
            f"merchant_order_no {merchant_order_no!r} already used with different fields",
            fields={f: "differs from the existing order" for f in different},
            code="idempotency_conflict",
        )
    return existing, False


def order_pay_url(order: Order) -> str:
    return bank.pay_url(
        out_trade_no=order.out_trade_no,
        amount=order.amount,
        currency=order.currency,
        subject=order.subject,
        expires_at=int(order.expires_at.timestamp()),
    )


def orders_close_expired(*, now=None) -> int:
    """CREATED orders past their expiry -> CLOSED. The status filter makes it a legal, race-free move."""
    Order.check_transition(Order.Status.CREATED, Order.Status.CLOSED)
    now = now or timezone.now()
    return Order.objects.filter(status=Order.Status.CREATED, expires_at__lt=now).update(
        status=Order.Status.CLOSED, updated_at=now
    )
