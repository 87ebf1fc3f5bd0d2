"""Reads of notify records for the merchant API and admin (writes are ``notifications.services``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from notifications.models import Attempt, Notification
from paysys.core.errors import NotFound
from paysys.core.series import per_minute

ALIAS = "notifications"


def notification_get(*, merchant_id: int, notification_id: str) -> Notification:
    """The merchant's own record by its id (the webhook-id it received); another merchant's is
    indistinguishable from a missing one."""
    notification = (
        Notification.objects.using(ALIAS)
        .select_related("endpoint")
        .filter(merchant_id=merchant_id, webhook_id=notification_id)
        .first()
    )
    if notification is None:
        raise NotFound("no such notification")
    return notification


def notification_list(
    *,
    merchant_id: int,
    status: str | None = None,
    merchant_order_no: str | None = None,
    out_trade_no: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Notification]:
    """The merchant's records; the (merchant_id[, status], created_at) indexes serve it newest first."""
    qs = Notification.objects.using(ALIAS).filter(merchant_id=merchant_id)
    if status:
        qs = qs.filter(status=status)
    if merchant_order_no:
        qs = qs.filter(merchant_order_no=merchant_order_no)
    if out_trade_no:
        qs = qs.filter(out_trade_no=out_trade_no)
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def notification_attempts(notification: Notification, *, limit: int = 100) -> list[Attempt]:
    """Its latest ``limit`` attempts in order (resends can make many; the count says how many)."""
    latest = list(notification.attempts.using(ALIAS).order_by("-number")[:limit])
    return latest[::-1]


def success_rates(merchant_ids, *, since: datetime | None = None) -> dict[int, tuple[int, int]]:
    """(succeeded, all) attempts per merchant since ``since`` (default: the last 24 h), from the
    (merchant_id, started_at) index: only the window's rows are read."""
    since = since or timezone.now() - timedelta(hours=24)
    rows = (
        Attempt.objects.using(ALIAS)
        .filter(merchant_id__in=list(merchant_ids), started_at__gte=since)
        .values("merchant_id")
        .annotate(
            total=Count("id"), succeeded=Count("id", filter=Q(outcome=Attempt.Outcome.SUCCEEDED))
        )
    )
    return {row["merchant_id"]: (row["succeeded"], row["total"]) for row in rows}


def attempts_started_before(cutoff: datetime) -> QuerySet[Attempt]:
    """Attempts old enough for retention to delete (``paysys.core.retention``)."""
    return Attempt.objects.using(ALIAS).filter(started_at__lt=cutoff)


# --- operations (admin's trace and overview) ---------------------------------------------------


def notification_by_webhook_id(webhook_id: str) -> Notification | None:
    return Notification.objects.using(ALIAS).filter(webhook_id=webhook_id).first()


def notifications_of_order(*, order_id: int) -> list[tuple[Notification, list[Attempt]]]:
    """Every record of an order (index of the unique (order_id, event_type)) with its latest attempts."""
    records = (
        Notification.objects.using(ALIAS).filter(order_id=order_id).order_by("created_at", "id")
    )
    return [(record, notification_attempts(record, limit=20)) for record in records]


def attempt_outcomes(*, since: datetime) -> dict[str, int]:
    """outcome -> attempts started since ``since`` (index (started_at, outcome))."""
    return dict(
        Attempt.objects.using(ALIAS)
        .filter(started_at__gte=since)
        .order_by()
        .values_list("outcome")
        .annotate(n=Count("id"))
    )


def attempts_per_minute(*, now: datetime) -> dict[str, list[int]]:
    """outcome -> attempts started in each minute of the last hour."""
    return per_minute(Attempt.objects.using(ALIAS).all(), "started_at", now=now, by="outcome")


# --- reconciliation (paysys.reconcile) ---------------------------------------------------------


def notification_counts(*, order_ids, event_type: str) -> dict[int, int]:
    """order_id -> records of ``event_type`` (index of the unique (order_id, event_type))."""
    rows = (
        Notification.objects.using(ALIAS)
        .filter(order_id__in=list(order_ids), event_type=event_type)
        .order_by()
        .values_list("order_id")
        .annotate(n=Count("id"))
    )
    return dict(rows)


def unsettled_counts() -> dict[str, int]:
    """status -> records not SUCCEEDED (PENDING: on their way; FAILED: for a human)."""
    return dict(
        Notification.objects.using(ALIAS)
        .exclude(status=Notification.Status.SUCCEEDED)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
