"""Creating a merchant's order, idempotently, and its pay link at the bank (docs/architecture.md).
Paying it: ``orders.payments``; asking the bank about it: ``orders.polling``, ``orders.expiry``."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders.models import Order
from paysys import bank
from paysys.core.errors import Conflict, InvalidInput, LimitReached
from paysys.core.models import Merchant, Payer

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
        raise InvalidInput(
            "unsupported currency",
            fields={"currency": f"one of {', '.join(settings.ORDER_CURRENCIES)}"},
        )
    wanted = {
        "amount": amount,
        "currency": currency,
        "subject": subject,
        "payer_id": payer_id,
        "notify_url": notify_url or "",
    }
    existing = Order.objects.filter(
        merchant_id=merchant.pk, merchant_order_no=merchant_order_no
    ).first()
    if existing is None:
        if not Payer.objects.filter(pk=payer_id).exists():
            raise InvalidInput("unknown payer", fields={"payer_id": "no such payer"})
        _check_open_orders_cap(merchant)
        try:
            with transaction.atomic(using="orders"):
                order = Order.objects.create(
                    out_trade_no=new_out_trade_no(),
                    merchant_id=merchant.pk,
                    merchant_order_no=merchant_order_no,
                    expires_at=timezone.now() + timedelta(seconds=settings.ORDER_EXPIRY_SECONDS),
                    next_poll_at=timezone.now()
                    + timedelta(seconds=settings.ORDER_POLL_SCHEDULE[0]),
                    **wanted,
                )
            return order, True
        except IntegrityError:
            # a concurrent create with the same merchant_order_no won the insert
            existing = Order.objects.get(
                merchant_id=merchant.pk, merchant_order_no=merchant_order_no
            )
    different = [f for f in IDEMPOTENT_FIELDS if getattr(existing, f) != wanted[f]]
    if different:
        raise Conflict(
            f"merchant_order_no {merchant_order_no!r} already used with different fields",
            fields={f: "differs from the existing order" for f in different},
            code="idempotency_conflict",
        )
    return existing, False


def _check_open_orders_cap(merchant: Merchant) -> None:
    """Every open unpaid order is polled at the bank until it expires: one merchant creating
    orders faster than they are paid must not make lost-notify recovery fall behind for everyone.
    Counts at most cap + 1 rows. A soft cap: concurrent creates may pass it by a few."""
    cap = merchant.max_open_orders or settings.ORDER_MAX_OPEN_PER_MERCHANT
    open_orders = Order.objects.filter(
        merchant_id=merchant.pk, status=Order.Status.CREATED, expires_at__gt=timezone.now()
    )
    if open_orders.values("pk")[: cap + 1].count() >= cap:
        raise LimitReached(
            f"this merchant has {cap} open unpaid orders, the most allowed; "
            "create more once some are paid, closed or expired",
            code="too_many_open_orders",
        )


def order_pay_url(order: Order) -> str:
    return bank.pay_url(
        out_trade_no=order.out_trade_no,
        amount=order.amount,
        currency=order.currency,
        subject=order.subject,
        expires_at=int(order.expires_at.timestamp()),
    )
