"""One merchant's hanging endpoint never delays another merchant: with its requests stuck in
flight, another merchant's notifications are delivered within one second of being due. Also:
two passes at once (two machines) never send a record twice."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from notifications.delivery import deliver_due
from notifications.models import Endpoint, Notification
from notifications.services import notification_create_for_order_paid
from tests.concurrency import run_at_once
from tests.faults.harness import wait_for
from tests.notifications.factories import order_paid
from tests.notifications.receiver import Behaviour, Receiver

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def in_background(**kwargs) -> threading.Thread:
    def run():
        try:
            deliver_due(**kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def elsewhere():
    """Another merchant server: another host:port than ``receiver``'s."""
    server = Receiver().start()
    yield server
    server.stop()


def notify_at(server: Receiver, merchant, path: str) -> Notification:
    return notification_create_for_order_paid(order_paid(merchant, notify_url=server.url(path)))


def test_a_hanging_merchant_does_not_delay_another_merchants_notifications(
    make_merchant, notify, receiver, elsewhere, settings
):
    settings.NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT = 4
    hanging, _ = make_merchant("hanging")
    healthy, _ = make_merchant("healthy")
    receiver.answer("/hang", Behaviour(hang=True))
    stuck = [notify(hanging, "/hang") for _ in range(20)]
    pass_ = in_background(budget_seconds=6)
    wait_for(
        lambda: len(receiver.requests("/hang")) == 4,
        timeout=5,
        what="the hanging endpoint's requests in flight",
    )

    # due now, and due in a moment (a retry coming due while the hang goes on)
    now_due = [notify_at(elsewhere, healthy, "/ok") for _ in range(5)]
    later = notify_at(elsewhere, healthy, "/ok")
    later_due = timezone.now() + timedelta(seconds=1.5)
    Notification.objects.filter(pk=later.pk).update(next_attempt_at=later_due)

    wait_for(
        lambda: len(elsewhere.requests("/ok")) == 6,
        timeout=5,
        what="the healthy merchant's notifications",
    )
    delivered = {r.headers["webhook-id"]: r.at for r in elsewhere.requests("/ok")}
    for record in now_due:
        assert delivered[record.webhook_id] - record.created_at.timestamp() < 1.0
    assert 0 <= delivered[later.webhook_id] - later_due.timestamp() < 1.0
    assert (
        len(receiver.requests("/hang")) == 4
    )  # bounded per endpoint: the rest of its backlog waits

    receiver.released.set()
    pass_.join(timeout=30)
    assert not pass_.is_alive()
    assert (
        Notification.objects.filter(pk__in=[r.pk for r in now_due], status="SUCCEEDED").count() == 5
    )
    assert Notification.objects.filter(pk__in=[r.pk for r in stuck], status="PENDING").count() == 20


def test_one_hanging_host_reached_through_many_urls_is_held_to_one_limit(
    make_merchant, receiver, elsewhere, settings
):
    """``?i=1`` ... ``?i=20`` are twenty endpoints of one server: together they get the limit of one."""
    settings.NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT = 4
    hanging, _ = make_merchant("hanging")
    healthy, _ = make_merchant("healthy")
    receiver.answer("/hang", Behaviour(hang=True))
    stuck = [notify_at(receiver, hanging, f"/hang?i={i}") for i in range(20)]
    assert Endpoint.objects.filter(merchant_id=hanging.pk).count() == 20
    pass_ = in_background(budget_seconds=4)
    wait_for(
        lambda: len(receiver.requests()) >= 4,
        timeout=5,
        what="the hanging host's requests in flight",
    )

    healthy_record = notify_at(elsewhere, healthy, "/ok")  # another host still has room
    wait_for(
        lambda: elsewhere.requests("/ok"), timeout=3, what="the healthy merchant's notification"
    )
    time.sleep(0.5)  # room for more claims: none may reach the hanging host

    assert len(receiver.requests()) == 4
    receiver.released.set()
    pass_.join(timeout=30)
    assert not pass_.is_alive()
    assert Notification.objects.get(pk=healthy_record.pk).status == "SUCCEEDED"
    assert Notification.objects.filter(pk__in=[r.pk for r in stuck], status="PENDING").count() == 20


def test_two_passes_at_once_send_each_record_once(merchant, notify, receiver):
    records = [notify(merchant, f"/n{i % 7}") for i in range(60)]

    run_at_once(deliver_due, deliver_due)

    assert len(receiver.requests()) == 60
    assert {r.headers["webhook-id"] for r in receiver.requests()} == {r.webhook_id for r in records}
    assert Notification.objects.filter(status="SUCCEEDED", attempt_count=1).count() == 60


@pytest.mark.django_db(databases="__all__")
def test_a_pass_at_its_deadline_leaves_slow_requests_to_the_next_pass(
    merchant, notify, receiver, settings
):
    settings.NOTIFY_TOTAL_TIMEOUT = 2
    receiver.answer("/hang", Behaviour(hang=True))
    slow = notify(merchant, "/hang")
    started = time.monotonic()

    deliver_due(budget_seconds=0.3, drain=False)  # what the worker's task does

    assert time.monotonic() - started < 1.5  # it did not wait out the hanging merchant
    slow.refresh_from_db()
    assert slow.attempt_count == 0 and len(receiver.requests("/hang")) == 1
    fast = notify(merchant, "/ok")
    deliver_due()  # the next pass sends at once, and records the slow one when it times out
    slow.refresh_from_db()
    fast.refresh_from_db()
    assert fast.status == Notification.Status.SUCCEEDED
    assert slow.attempts.get().error_class == "timeout"
    assert receiver.requests("/ok")[0].at < receiver.requests("/hang")[0].at + 2
