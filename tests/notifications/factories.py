"""Notify records and attempts for the API, admin and metrics tests, written as the services do."""

from __future__ import annotations

import itertools
import random
from datetime import datetime

from django.utils import timezone

from notifications.models import Attempt, Notification
from notifications.services import notification_create_for_order_paid
from paysys.contracts import OrderPaid
from tests.statuses import force_status

_orders = itertools.count(random.randrange(3 * 10**9, 4 * 10**9))


def order_paid(merchant, *, notify_url: str = "", **overrides) -> OrderPaid:
    """An order.paid event of a new order of ``merchant``, as orders publishes it."""
    n = next(_orders)
    fields = dict(
        order_id=n,
        out_trade_no=f"P{n:020d}",
        merchant_id=merchant.pk,
        merchant_order_no=f"M-{n}",
        payer_id=11,
        amount=1234,
        currency="CNY",
        fee=7,
        bank_trade_no=f"B{n:012d}",
        paid_at="2026-01-02T03:04:05+00:00",
        notify_url=notify_url,
        method="bank",
        points_awarded=12,
    )
    fields.update(overrides)
    return OrderPaid(**fields)


def make_notification(
    merchant,
    *,
    notify_url: str = "https://shop.example/notify",
    status: str = "PENDING",
    created_at: datetime | None = None,
    **overrides,
) -> Notification:
    """A record for a newly paid order of ``merchant`` (through the consumer's service), then put
    in ``status`` / at ``created_at`` as delivery would have left it."""
    record = notification_create_for_order_paid(
        order_paid(merchant, notify_url=notify_url, **overrides)
    )
    changes = {}
    if status != "PENDING":
        changes["next_attempt_at"] = None
    if created_at is not None:
        changes["created_at"] = created_at
    force_status(Notification.objects.filter(pk=record.pk), status, **changes)
    record.refresh_from_db()
    return record


def make_attempt(
    notification: Notification,
    *,
    outcome: str = "failed",
    status_code: int | None = 500,
    started_at: datetime | None = None,
    error_class: str = "http_status",
    **overrides,
) -> Attempt:
    number = notification.attempts.count() + 1
    fields = dict(
        notification=notification,
        merchant_id=notification.merchant_id,
        number=number,
        started_at=started_at or timezone.now(),
        url=notification.url,
        request_headers={"webhook-id": notification.webhook_id},
        request_body=notification.body,
        status_code=status_code,
        outcome=outcome,
        error_class="" if outcome == "succeeded" else error_class,
        duration_ms=12,
    )
    fields.update(overrides)
    attempt = Attempt.objects.create(**fields)
    Notification.objects.filter(pk=notification.pk).update(attempt_count=number)
    return attempt
