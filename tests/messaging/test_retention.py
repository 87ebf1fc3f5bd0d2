"""Retention of the message service (paysys.messaging.retention): consumed messages and their inbox
rows go once CONSUMED for the retention age, together; nothing that may still be sent goes, so a
purge never lets a message be applied twice, not even after a human resend."""

import socket
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from paysys.core import retention
from paysys.messaging import actions
from paysys.messaging.models import InboxEntry, Message
from tests.messaging.helpers import deliver_all, force_status, handled, publish_ping

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.usefixtures("kicked")]

CONSUMERS = ("notifications.test_ping", "accounting.test_ping")
AGE = timedelta(days=30)


@pytest.fixture(autouse=True)
def _no_pause(settings):
    settings.RETENTION_PAUSE_SECONDS, settings.RETENTION_TIME_SHARE = 0, 1


def ago(days: float):
    return timezone.now() - timedelta(days=days)


def outbox(message_id):
    return Message.objects.using("orders").filter(message_id=message_id)


def inbox(message_id) -> set[tuple[str, str]]:
    """(alias, consumer) of the message's inbox rows in every database."""
    return {
        (alias, consumer)
        for alias in ("notifications", "accounting")
        for consumer in InboxEntry.objects.using(alias)
        .filter(message_id=message_id, consumer__in=CONSUMERS)
        .values_list("consumer", flat=True)
    }


def applied(message_id, *, days_ago: float) -> None:
    """Written, delivered and applied by both consumers ``days_ago`` (their inbox rows too)."""
    deliver_all("orders", message_id=message_id)
    assert len(inbox(message_id)) == 2
    outbox(message_id).update(created_at=ago(days_ago), consumed_at=ago(days_ago))
    for alias in ("notifications", "accounting"):
        InboxEntry.objects.using(alias).filter(message_id=message_id).update(
            received_at=ago(days_ago)
        )


def purge() -> retention.PurgeResult:
    return retention.purge_history(older_than=AGE)


def test_a_message_consumed_longer_ago_than_the_age_goes_with_its_inbox_rows():
    # given one message applied 40 days ago and one applied today
    old, young = publish_ping({"n": 1}), publish_ping({"n": 2})
    applied(old, days_ago=40)
    applied(young, days_ago=0)

    # when retention runs with an age of 30 days
    result = purge()

    # then the old one's outbox rows and inbox rows are gone, in every consumer's database; the young one's stay
    assert not outbox(old).exists() and inbox(old) == set()
    assert outbox(young).count() == 2 and len(inbox(young)) == 2
    counted = {label: n for label, n in result.counts.items() if n}
    assert counted == {"messages (orders)": 2, "inbox (notifications)": 1, "inbox (accounting)": 1}
    assert result.complete and result.skipped == []


@pytest.mark.parametrize("status", ["PREPARED", "SENDING", "DEAD"])
def test_a_message_that_may_still_be_sent_stays_with_its_inbox_rows_however_old(status):
    # given a message applied 40 days ago whose outbox rows are still PREPARED, SENDING (the
    # acknowledgement was lost) or DEAD (a human may resend it)
    message_id = publish_ping()
    applied(message_id, days_ago=40)
    force_status(outbox(message_id), status, consumed_at=None)

    purge()

    assert outbox(message_id).count() == 2 and len(inbox(message_id)) == 2


def test_a_message_consumed_only_recently_stays_however_long_ago_it_was_written():
    # given a message written 40 days ago, DEAD until a human resent it yesterday
    message_id = publish_ping()
    applied(message_id, days_ago=40)
    outbox(message_id).update(consumed_at=ago(1))

    purge()

    # then a copy sent yesterday may still be on its way: its inbox rows must be there to stop it
    assert outbox(message_id).count() == 2 and len(inbox(message_id)) == 2


def test_a_human_resend_of_an_old_message_never_applies_it_twice(admin_client):
    # given a message both consumers applied 40 days ago, whose acknowledgement was lost: the
    # outbox resent it on schedule, then it went DEAD, waiting for a human
    message_id = publish_ping({"n": 7})
    applied(message_id, days_ago=40)
    force_status(outbox(message_id), "DEAD", consumed_at=None, next_send_at=None, send_count=5)
    assert len(handled) == 2

    # when retention runs, then a human resends it from admin, and a worker delivers it
    purge()
    for row in outbox(message_id):
        response = admin_client.post(
            f"/admin/messaging/message/{row.pk}/resend/?_changelist_filters=service%3Dorders"
        )
        assert response.status_code == 302
    deliver_all("orders", message_id=message_id)

    # then it was not applied again: its inbox rows were kept (DEAD may be resent), so the
    # resend was a duplicate, acknowledged without running a handler
    assert len(handled) == 2
    assert set(outbox(message_id).values_list("status", flat=True)) == {"CONSUMED"}

    # and once CONSUMED for the whole age, retention deletes its outbox and inbox rows together:
    # there is nothing left for a human to resend
    pks = list(outbox(message_id).values_list("pk", flat=True))
    outbox(message_id).update(consumed_at=ago(31))
    purge()
    assert not outbox(message_id).exists() and inbox(message_id) == set()
    assert actions.resend("orders", pks) == 0
    assert actions.resend_dead_messages("orders", queue="notifications") == 0
    assert deliver_all("orders") == {"acked": [], "failed": []}
    assert len(handled) == 2


def test_the_inbox_rows_of_a_consumer_no_longer_registered_go_in_every_database():
    message_id = publish_ping()
    applied(message_id, days_ago=40)
    outbox(message_id).filter(consumer="accounting.test_ping").update(consumer="renamed.consumer")
    for alias in ("notifications", "points"):
        InboxEntry.objects.using(alias).create(
            consumer="renamed.consumer", message_id=message_id, topic="test.ping"
        )

    purge()

    assert not outbox(message_id).exists()
    for alias in ("notifications", "points"):
        assert not InboxEntry.objects.using(alias).filter(consumer="renamed.consumer").exists()


def test_a_batch_at_a_time_by_key_until_everything_old_is_gone(settings):
    settings.RETENTION_BATCH_SIZE = 3
    old = [publish_ping({"n": n}) for n in range(5)]  # 10 outbox rows: 4 batches
    young = publish_ping({"n": 99})
    for message_id in old:
        applied(message_id, days_ago=40)
    applied(young, days_ago=0)
    seen = []

    retention.purge_history(
        older_than=AGE,
        progress=lambda label, counts, done: (
            seen.append((label, counts[label], done)) if label == "messages (orders)" else None
        ),
    )

    assert [n for _, n, _ in seen] == [3, 6, 9, 10, 10] and seen[-1][2] is True
    assert not Message.objects.using("orders").filter(message_id__in=old).exists()
    assert outbox(young).count() == 2


def test_no_history_younger_than_a_day_can_be_purged():
    with pytest.raises(ValueError, match="younger than 1 day"):
        retention.purge_history(older_than=timedelta(hours=23))


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_a_consumer_database_that_does_not_answer_keeps_the_outbox_rows():
    # given a message applied 40 days ago, and the accounting database cut off (a refused port)
    connection = connections["accounting"]
    if connection.vendor == "sqlite":
        pytest.skip("a SQLite file cannot be cut off; the full stack runs this")
    message_id = publish_ping()
    applied(message_id, days_ago=40)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = port
    try:
        # when retention runs
        result = purge()
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved

    # then the outbox rows stay (so do accounting's inbox rows): the next pass deletes them together
    assert "messages (orders)" in result.skipped
    assert outbox(message_id).count() == 2
    assert ("accounting", "accounting.test_ping") in inbox(message_id)
    assert not purge().skipped and not outbox(message_id).exists() and inbox(message_id) == set()
