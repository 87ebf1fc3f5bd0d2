"""Retention (paysys.core.retention, ``manage.py purge_history``, beat's ``paysys.purge_history``):
notification attempts and processed bank-notify receipts older than the age go in batches; what
a human or a reader still needs stays. The message service's rule: tests/messaging/test_retention.py."""

import io
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications.models import Attempt, Notification
from paysys.core import retention
from paysys.gateway.models import BankNotifyReceipt
from paysys.messaging.models import Message
from tests.messaging.helpers import deliver_all, publish_ping
from tests.notifications.factories import make_attempt, make_notification

pytestmark = pytest.mark.django_db(databases="__all__")

Receipt = BankNotifyReceipt.State


@pytest.fixture(autouse=True)
def _no_pause(settings):
    settings.RETENTION_PAUSE_SECONDS, settings.RETENTION_TIME_SHARE = 0, 1


def ago(days: float):
    return timezone.now() - timedelta(days=days)


def receipt(
    state: str, *, days_ago: float, processed_days_ago: float | None = None
) -> BankNotifyReceipt:
    row = BankNotifyReceipt.objects.create(raw_body=b"{}", signature="s", state=state)
    processed = (
        ago(days_ago if processed_days_ago is None else processed_days_ago)
        if state != Receipt.RECEIVED
        else None
    )
    BankNotifyReceipt.objects.filter(pk=row.pk).update(
        received_at=ago(days_ago), processed_at=processed
    )
    return row


def test_attempts_older_than_the_age_go_their_notification_stays(merchant):
    record = make_notification(merchant, status="SUCCEEDED")
    old = [make_attempt(record, started_at=ago(40)) for _ in range(3)]
    young = make_attempt(record, outcome="succeeded", status_code=200, started_at=ago(2))

    result = retention.purge_history(older_than=timedelta(days=30))

    assert list(Attempt.objects.values_list("pk", flat=True)) == [young.pk]
    assert result.counts["notification attempts"] == len(old)
    record = Notification.objects.get(pk=record.pk)  # the record, its body and webhook-id stay
    assert (record.status, record.attempt_count) == ("SUCCEEDED", 4)


def test_only_processed_receipts_older_than_the_age_go():
    gone = [receipt(Receipt.PROCESSED, days_ago=40) for _ in range(2)]
    kept = [
        receipt(Receipt.RECEIVED, days_ago=40),  # never read: its notify may not be stored
        receipt(Receipt.REJECTED, days_ago=40),  # waits for a human
        receipt(
            Receipt.PROCESSED, days_ago=40, processed_days_ago=2
        ),  # reprocessed by a human lately
        receipt(Receipt.PROCESSED, days_ago=2),
    ]

    result = retention.purge_history(older_than=timedelta(days=30))

    assert set(BankNotifyReceipt.objects.values_list("pk", flat=True)) == {r.pk for r in kept}
    assert result.counts["bank-notify receipts"] == len(gone)


def test_the_key_boundary_is_found_by_a_binary_search_across_gaps():
    rows = [receipt(Receipt.PROCESSED, days_ago=days) for days in (50, 45, 44, 43, 42, 41, 3, 2, 1)]
    BankNotifyReceipt.objects.filter(pk__in=[r.pk for r in rows[1:4]]).delete()  # a gap in the keys
    every = BankNotifyReceipt.objects.all()

    assert retention._last_key_before(every, "received_at", ago(30)) == rows[5].pk
    assert retention._last_key_before(every, "received_at", ago(60)) is None
    assert retention._last_key_before(every, "received_at", ago(0)) == rows[-1].pk
    assert (
        retention._last_key_before(BankNotifyReceipt.objects.none(), "received_at", ago(0)) is None
    )


def test_each_batch_is_followed_by_a_rest_that_keeps_retention_to_its_share(settings, monkeypatch):
    settings.RETENTION_BATCH_SIZE, settings.RETENTION_TIME_SHARE = 2, 0.2
    settings.RETENTION_PAUSE_SECONDS = 0.05
    for _ in range(5):
        receipt(Receipt.PROCESSED, days_ago=40)
    rests = []
    clock = iter(range(0, 1000, 1))  # every reading of the clock one second later
    monkeypatch.setattr(retention.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(retention.time, "sleep", rests.append)

    result = retention.purge_history(older_than=timedelta(days=30), budget_seconds=None)

    assert result.counts["bank-notify receipts"] == 5
    # three batches (2 + 2 + 1 keys), each read one clock tick after it began: a rest of
    # four times that, so the batches fill a fifth of the connection's time
    assert rests == [4.0, 4.0, 4.0]
    settings.RETENTION_TIME_SHARE = 1  # all of it: only the least rest is kept
    assert retention._pause_after(0.01) == 0.05 and retention._pause_after(2) == 0.05


def test_a_pass_out_of_time_stops_and_the_next_goes_on():
    receipt(Receipt.PROCESSED, days_ago=40)

    first = retention.purge_history(older_than=timedelta(days=30), budget_seconds=0)
    second = retention.purge_history(older_than=timedelta(days=30), budget_seconds=60)

    assert (first.complete, sum(first.counts.values())) == (False, 0)
    assert (second.complete, second.counts["bank-notify receipts"]) == (True, 1)


@pytest.mark.parametrize(
    "text,age",
    [("30d", timedelta(days=30)), ("36h", timedelta(hours=36)), (" 2d ", timedelta(days=2))],
)
def test_an_age_is_days_or_hours(text, age):
    assert retention.parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "30m", "-1d", "1.5d", "d", "", "30 days"])
def test_anything_else_is_not_an_age(text):
    with pytest.raises(ValueError, match="like 30d or 36h"):
        retention.parse_age(text)


# --- manage.py purge_history --------------------------------------------------------------


def purge_history(*args) -> str:
    out = io.StringIO()
    call_command("purge_history", *args, stdout=out)
    return out.getvalue()


def old_history(merchant):
    """40 days old: a consumed message (2 outbox rows, 2 inbox rows), 2 attempts, 1 receipt."""
    message_id = publish_ping()
    deliver_all("orders", message_id=message_id)
    Message.objects.using("orders").filter(message_id=message_id).update(
        created_at=ago(40), consumed_at=ago(40)
    )
    record = make_notification(merchant, status="FAILED")
    for _ in range(2):
        make_attempt(record, started_at=ago(40))
    receipt(Receipt.PROCESSED, days_ago=40)


def test_dry_run_counts_per_table_and_deletes_nothing(merchant):
    old_history(merchant)

    output = purge_history("--older-than", "30d", "--dry-run")

    assert (
        "messages (orders): 2 would go, inbox (notifications): 1, inbox (accounting): 1" in output
    )
    assert (
        "notification attempts: 2 would go" in output
        and "bank-notify receipts: 1 would go" in output
    )
    assert "7 row(s) would go in all" in output
    assert Message.objects.using("orders").count() == 2 and Attempt.objects.count() == 2
    assert BankNotifyReceipt.objects.count() == 1


def test_it_deletes_and_shows_each_table(merchant):
    old_history(merchant)

    output = purge_history("--older-than", "720h")

    assert "messages (orders): 2 deleted, inbox (notifications): 1, inbox (accounting): 1" in output
    assert "notification attempts: 2 deleted" in output and "7 row(s) deleted in all" in output
    assert not Message.objects.using("orders").exists() and not Attempt.objects.exists()


def test_it_keeps_what_is_younger_than_asked(merchant):
    old_history(merchant)

    assert "0 row(s) deleted in all" in purge_history("--older-than", "41d")


@pytest.mark.parametrize(
    "age,problem",
    [
        ("12h", "younger than the minimum of 1d"),
        ("0d", "younger than the minimum"),
        ("thirty", "not an age"),
    ],
)
def test_an_age_under_a_day_or_unreadable_is_refused(age, problem, merchant):
    old_history(merchant)

    with pytest.raises(CommandError, match=problem):
        purge_history("--older-than", age)

    assert Message.objects.using("orders").count() == 2


def test_the_default_age_is_the_setting(merchant, settings):
    settings.RETENTION_DAYS = 45
    old_history(merchant)

    assert (
        "0 row(s) deleted in all" in purge_history()
    )  # the command reads the setting when it starts
    settings.RETENTION_DAYS = 30
    assert "7 row(s) deleted in all" in purge_history()


# --- beat, the queue and the worker ---------------------------------------------------------


def test_beat_purges_every_minute_on_a_queue_of_its_own_that_the_stack_runs(merchant):
    from paysys.celery import app
    from paysys.core.tasks import purge_history as task

    assert django_settings.CELERY_BEAT_SCHEDULE["paysys.purge_history"] == {
        "task": "paysys.purge_history",
        "schedule": 60.0,
    }
    queue = app.amqp.router.route({}, "paysys.purge_history")["queue"].name
    assert (
        queue == "maintenance" and queue not in django_settings.SERVICE_QUEUES
    )  # no payment waits behind it
    procfile = (django_settings.BASE_DIR / "Procfile").read_text().splitlines()
    assert any(line.startswith("maintenance:") and "-Q maintenance" in line for line in procfile)
    assert " maintenance " in (django_settings.BASE_DIR / "Makefile").read_text()

    old_history(merchant)
    assert task() == {
        **{f"messages ({alias})": 0 for alias in django_settings.DATABASES},
        "messages (orders)": 2,
        "inbox (notifications)": 1,
        "inbox (accounting)": 1,
        "notification attempts": 2,
        "bank-notify receipts": 1,
    }
