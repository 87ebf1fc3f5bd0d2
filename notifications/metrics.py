"""Notification delivery health for Prometheus (``GET /metrics``, paysys/ops/metrics.py), read at
scrape time.

Every figure is an index range whose size follows the current load, never the history kept:

    paysys_notify_attempts_last_minute{outcome}  attempts started in the last 60 s, by outcome
                                                 (succeeded / failed / refused); index (started_at, outcome)
    paysys_notify_due                            records due now and not yet claimed (the backlog);
                                                 index next_attempt_at (non-NULL only while PENDING)
    paysys_notify_oldest_due_seconds             how long the oldest due record has waited, 0 if none
    paysys_notify_pending                        records still to be delivered (due now or later)
    paysys_notify_endpoints_disabled             endpoints disabled by a 410 or an operator
    paysys_notify_endpoints_failing              enabled endpoints whose last attempt failed

A FAILED record (schedule exhausted) is a human's job: admin lists them by merchant. When the
notifications database does not answer, the family is left out (the messaging collector reports
``paysys_database_up{alias="notifications"} 0``); a scrape never fails because of it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from notifications.models import Attempt, Endpoint, Notification

logger = logging.getLogger(__name__)

ALIAS = "notifications"
ATTEMPT_WINDOW = timedelta(seconds=60)


def notify_stats() -> dict:
    """The figures above as a dict (admin and benchmarks may show them too). Four small queries."""
    now = timezone.now()
    by_outcome = dict(
        Attempt.objects.using(ALIAS)
        .filter(started_at__gte=now - ATTEMPT_WINDOW)
        .order_by()
        .values_list("outcome")
        .annotate(n=Count("id"))
    )
    due = (
        Notification.objects.using(ALIAS)
        .filter(next_attempt_at__lte=now)
        .aggregate(n=Count("id"), oldest=Min("next_attempt_at"))
    )
    pending = Notification.objects.using(ALIAS).filter(next_attempt_at__isnull=False).count()
    endpoints = Endpoint.objects.using(ALIAS).aggregate(
        disabled=Count("id", filter=Q(disabled_at__isnull=False)),
        failing=Count("id", filter=Q(disabled_at__isnull=True, consecutive_failures__gt=0)),
    )
    return {
        "attempts_last_minute": {
            outcome: by_outcome.get(outcome, 0) for outcome in Attempt.Outcome.values
        },
        "due": due["n"],
        "oldest_due_seconds": max((now - due["oldest"]).total_seconds(), 0.0)
        if due["oldest"]
        else 0.0,
        "pending": pending,
        "endpoints_disabled": endpoints["disabled"],
        "endpoints_failing": endpoints["failing"],
    }


class NotificationCollector(Collector):
    def collect(self):
        try:
            stats = notify_stats()
        except DatabaseError:
            logger.warning("notification metrics skipped: database unavailable", exc_info=True)
            return
        attempts = GaugeMetricFamily(
            "paysys_notify_attempts_last_minute",
            "Notification attempts started in the last 60 s, by outcome.",
            labels=["outcome"],
        )
        for outcome, n in stats["attempts_last_minute"].items():
            attempts.add_metric([outcome], n)
        yield attempts
        for name, key, text in [
            (
                "paysys_notify_due",
                "due",
                "Notifications due now and not yet claimed by a delivery pass.",
            ),
            (
                "paysys_notify_oldest_due_seconds",
                "oldest_due_seconds",
                "How long the oldest due notification has waited.",
            ),
            (
                "paysys_notify_pending",
                "pending",
                "Notifications still to be delivered, due now or later.",
            ),
            (
                "paysys_notify_endpoints_disabled",
                "endpoints_disabled",
                "Merchant endpoints disabled (410 Gone or an operator).",
            ),
            (
                "paysys_notify_endpoints_failing",
                "endpoints_failing",
                "Enabled endpoints whose last attempt failed.",
            ),
        ]:
            yield GaugeMetricFamily(name, text, value=stats[key])
