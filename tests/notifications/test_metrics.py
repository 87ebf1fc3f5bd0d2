"""GET /metrics: notification attempts by outcome, the due backlog and its age, endpoint health."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications import metrics
from notifications.models import Endpoint, Notification
from notifications.services import endpoint_disable
from tests.messaging.test_metrics import labels, metrics_token, scrape  # noqa: F401 - metrics_token is autouse
from tests.notifications.factories import make_attempt, make_notification

pytestmark = pytest.mark.django_db(databases="__all__")


def test_an_empty_system_reports_zeros(client):
    samples = scrape(client)

    assert samples[("paysys_notify_due", ())] == 0
    assert samples[("paysys_notify_oldest_due_seconds", ())] == 0
    assert samples[("paysys_notify_endpoints_disabled", ())] == 0
    assert samples[("paysys_notify_attempts_last_minute", labels(outcome="succeeded"))] == 0


def test_backlog_age_attempts_and_endpoints(client, make_merchant):
    shop, _ = make_merchant()
    other, _ = make_merchant()
    now = timezone.now()
    late = make_notification(shop)
    Notification.objects.filter(pk=late.pk).update(next_attempt_at=now - timedelta(seconds=90))
    make_notification(shop)  # due now
    later = make_notification(shop)
    Notification.objects.filter(pk=later.pk).update(
        next_attempt_at=now + timedelta(minutes=5)
    )  # retry scheduled
    make_notification(shop, status="SUCCEEDED")
    for outcome in ["succeeded", "succeeded", "failed", "refused"]:
        make_attempt(late, outcome=outcome)
    make_attempt(
        late, outcome="failed", started_at=now - timedelta(minutes=5)
    )  # outside the minute
    gone = make_notification(other, notify_url="https://gone.example/n")
    endpoint_disable(gone.endpoint, reason="410 Gone")
    failing = make_notification(other, notify_url="https://down.example/n", status="FAILED")
    Endpoint.objects.filter(pk=failing.endpoint_id).update(consecutive_failures=4)

    samples = scrape(client)

    assert (
        samples[("paysys_notify_due", ())] == 3
    )  # late, the one due now, and gone's (due, sent nowhere)
    assert samples[("paysys_notify_pending", ())] == 4
    assert 89 <= samples[("paysys_notify_oldest_due_seconds", ())] < 150
    attempts = {
        outcome: samples[("paysys_notify_attempts_last_minute", labels(outcome=outcome))]
        for outcome in ("succeeded", "failed", "refused")
    }
    assert attempts == {"succeeded": 2, "failed": 1, "refused": 1}
    assert samples[("paysys_notify_endpoints_disabled", ())] == 1
    assert samples[("paysys_notify_endpoints_failing", ())] == 1


def test_the_figures_take_four_queries_whatever_the_history(make_merchant):
    shop, _ = make_merchant()
    for _ in range(5):
        make_attempt(
            make_notification(shop, status="SUCCEEDED"),
            outcome="succeeded",
            started_at=timezone.now() - timedelta(days=2),
        )

    with CaptureQueriesContext(connections["notifications"]) as queries:
        metrics.notify_stats()

    assert len(queries) == 4
    assert all(
        "started_at" in q["sql"] or "next_attempt_at" in q["sql"] or "endpoint" in q["sql"]
        for q in queries
    )


def test_an_unreachable_notifications_database_leaves_the_family_out(client, monkeypatch):
    def down():
        raise DatabaseError("gone")

    monkeypatch.setattr(metrics, "notify_stats", down)

    samples = scrape(client)

    assert not any(name.startswith("paysys_notify_") for name, _ in samples)
    assert any(
        name == "paysys_database_up" for name, _ in samples
    )  # the rest of the scrape is there
