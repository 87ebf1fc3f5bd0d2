"""Delivery to a real local merchant server: signatures a third-party verifier accepts, the retry
schedule (with an injected clock), Retry-After, 410, redirects, resend."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifications.delivery import deliver_due
from notifications.models import Attempt, Endpoint, Notification
from notifications.services import (
    endpoint_enable,
    merchant_schedule_set,
    notification_resend,
    notifications_recover_failed,
)
from paysys.core.services import merchant_rotate_webhook_secret
from paysys.messaging import publish
from paysys.messaging.consumption import consume_batch
from tests.messaging.helpers import deliveries_for
from tests.notifications.factories import order_paid
from tests.notifications.helpers import deliver_due_at
from tests.notifications.receiver import Behaviour

pytestmark = pytest.mark.django_db(databases="__all__")

SCHEDULE = [15, 60, 300, 1800, 7200, 21600, 43200, 86400]


def verify(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def test_a_paid_order_reaches_the_merchant_signed_and_a_standard_verifier_accepts_it(
    merchant, notify, receiver
):
    record = notify(merchant)

    result = deliver_due()

    assert result.succeeded == 1
    [request] = receiver.requests()
    payload = verify(merchant.webhook_secret, request)
    assert payload == {
        "type": "order.paid",
        "timestamp": payload["timestamp"],
        "data": {
            "merchant_order_no": record.merchant_order_no,
            "out_trade_no": record.out_trade_no,
            "amount": 1234,
            "currency": "CNY",
            "fee": 7,
            "status": "SUCCESS",
            "paid_at": "2026-01-02T03:04:05Z",
            "method": "bank",
            "points_awarded": 12,
        },
    }
    assert request.headers["webhook-id"] == record.webhook_id and record.webhook_id.startswith(
        "msg_"
    )
    assert request.headers["content-type"] == "application/json"
    record.refresh_from_db()
    assert (record.status, record.attempt_count, record.next_attempt_at) == (
        Notification.Status.SUCCEEDED,
        1,
        None,
    )
    attempt = record.attempts.get()
    assert (attempt.number, attempt.outcome, attempt.status_code, attempt.response_excerpt) == (
        1,
        "succeeded",
        200,
        "ok",
    )
    assert attempt.address == "127.0.0.1" and attempt.request_body == request.body == record.body
    assert attempt.request_headers["webhook-signature"] == request.headers["webhook-signature"]


def test_a_delivered_notification_is_one_info_line_with_its_out_trade_no(
    merchant, notify, receiver, caplog, django_capture_on_commit_callbacks
):
    import logging

    record = notify(merchant)

    with (
        caplog.at_level(logging.INFO, logger="notifications.delivery"),
        django_capture_on_commit_callbacks(using="notifications", execute=True),
    ):
        deliver_due()

    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "notifications.delivery" and r.levelno == logging.INFO
    ]
    assert lines == [
        f"order {record.out_trade_no}: merchant {merchant.pk} notified ({record.webhook_id}, HTTP 200, attempt 1)"
    ]


def test_the_verifier_rejects_a_tampered_body_and_an_old_timestamp(merchant, notify, receiver):
    notify(merchant)
    deliver_due()
    [request] = receiver.requests()

    with pytest.raises(WebhookVerificationError):
        Webhook(merchant.webhook_secret).verify(
            request.body.replace("1234", "9999"), request.headers
        )
    old = dict(
        request.headers,
        **{"webhook-timestamp": str(int(request.headers["webhook-timestamp"]) - 600)},
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(merchant.webhook_secret).verify(request.body, old)


def test_during_a_secret_rotation_both_secrets_verify_every_notification(
    merchant, notify, receiver
):
    old_secret = merchant.webhook_secret
    new_secret = merchant_rotate_webhook_secret(merchant_id=merchant.pk).webhook_secret
    notify(merchant)

    deliver_due()

    [request] = receiver.requests()
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify(old_secret, request)["type"] == "order.paid"  # merchant not yet switched
    assert verify(new_secret, request)["type"] == "order.paid"  # merchant switched


def test_a_duplicate_order_paid_makes_one_record_and_one_delivery(merchant, receiver):
    event = order_paid(merchant, notify_url=receiver.url())
    with transaction.atomic(using="orders"):
        publish(event, using="orders")
    with transaction.atomic(using="orders"):  # the same order announced twice (two messages)
        publish(event, using="orders")
    deliveries = deliveries_for("orders", consumer="notifications.notify_order_paid")
    assert len(deliveries) == 2

    consume_batch("orders", deliveries)
    consume_batch("orders", deliveries)  # and each message redelivered
    deliver_due()
    deliver_due()

    record = Notification.objects.get(order_id=event.order_id)
    assert record.status == Notification.Status.SUCCEEDED
    assert len(receiver.requests()) == 1 and record.attempts.count() == 1


def test_without_a_notify_url_on_the_order_the_merchants_url_is_used(make_merchant, receiver):
    from notifications.services import notification_create_for_order_paid

    merchant, _ = make_merchant(notify_url=receiver.url("/merchant-default"))
    record = notification_create_for_order_paid(order_paid(merchant, notify_url=""))

    deliver_due()

    assert record.url == receiver.url("/merchant-default")
    assert len(receiver.requests("/merchant-default")) == 1


def run_due(record, now):
    """A pass at the record's due time (the injected clock); returns the reloaded record."""
    record.refresh_from_db()
    deliver_due_at(max(now, record.next_attempt_at))
    record.refresh_from_db()
    return record


def test_retries_follow_the_schedule_with_jitter_and_end_failed_for_a_human(
    merchant, notify, receiver
):
    receiver.answer("/notify", Behaviour(status=500, body="boom"))
    record = notify(merchant)
    now = timezone.now()

    for step, wait in enumerate(SCHEDULE):
        record = run_due(record, now)
        now = record.next_attempt_at
        assert record.status == Notification.Status.PENDING and record.attempt_count == step + 1
        last = record.attempts.order_by("number").last()
        # the pass ran at the previous due time; the next is the step's wait +-20 %
        due_in = (record.next_attempt_at - record.updated_at).total_seconds()
        assert wait * 0.8 - 0.01 <= due_in <= wait * 1.2 + 0.01, (step, due_in)
        assert (last.outcome, last.status_code, last.error_class, last.response_excerpt) == (
            "failed",
            500,
            "http_status",
            "boom",
        )
        # not due a moment before its time
        assert deliver_due_at(record.next_attempt_at - timedelta(seconds=1)).claimed == 0

    record = run_due(record, now)

    assert (record.status, record.attempt_count, record.next_attempt_at) == (
        Notification.Status.FAILED,
        9,
        None,
    )
    assert len(receiver.requests()) == 9
    assert {r.headers["webhook-id"] for r in receiver.requests()} == {record.webhook_id}
    assert deliver_due_at(now + timedelta(days=30)).claimed == 0  # waits for a human


def test_retries_stop_at_the_first_2xx(merchant, notify, receiver):
    receiver.answer(
        "/notify", Behaviour(status=503), Behaviour(status=502), Behaviour(status=204, body="")
    )
    record = notify(merchant)
    now = timezone.now()

    for _ in range(3):
        record = run_due(record, now)
        now = record.next_attempt_at or now

    assert (record.status, record.attempt_count) == (Notification.Status.SUCCEEDED, 3)
    assert deliver_due_at(now + timedelta(days=3)).claimed == 0
    assert len(receiver.requests()) == 3


def test_a_merchants_own_schedule_overrides_the_default(merchant, notify, receiver, settings):
    settings.NOTIFY_RETRY_JITTER = 0
    merchant_schedule_set(merchant_id=merchant.pk, retry_schedule=[7, 11])
    receiver.answer("/notify", Behaviour(status=500))
    record = notify(merchant)
    now = timezone.now()

    record = run_due(record, now)
    assert (record.next_attempt_at - now).total_seconds() == pytest.approx(7, abs=0.01)
    now = record.next_attempt_at
    record = run_due(record, now)
    assert (record.next_attempt_at - now).total_seconds() == pytest.approx(11, abs=0.01)
    record = run_due(record, record.next_attempt_at)
    assert (record.status, record.attempt_count) == (Notification.Status.FAILED, 3)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("25", 25),
        ("3600", 30),
        ("2", 15),
    ],  # honoured; capped at 2 x the 15 s step; never shortens it
)
def test_retry_after_is_honoured_up_to_twice_the_next_wait(
    merchant, notify, receiver, settings, retry_after, expected
):
    settings.NOTIFY_RETRY_JITTER = 0
    receiver.answer("/notify", Behaviour(status=429, headers={"Retry-After": retry_after}))
    record = notify(merchant)
    now = timezone.now()

    record = run_due(record, now)

    assert (record.next_attempt_at - now).total_seconds() == pytest.approx(expected, abs=0.01)


def test_retry_after_as_an_http_date(merchant, notify, receiver, settings):
    from email.utils import format_datetime

    settings.NOTIFY_RETRY_JITTER = 0
    when = timezone.now() + timedelta(seconds=22)
    receiver.answer(
        "/notify",
        Behaviour(status=503, headers={"Retry-After": format_datetime(when, usegmt=True)}),
    )
    record = notify(merchant)
    now = timezone.now()

    record = run_due(record, now)

    assert (record.next_attempt_at - now).total_seconds() == pytest.approx(22, abs=1.5)


def test_410_gone_disables_the_endpoint_until_it_is_enabled(merchant, notify, receiver):
    receiver.answer("/notify", Behaviour(status=410))
    first = notify(merchant)
    deliver_due()
    first.refresh_from_db()
    endpoint = Endpoint.objects.get(pk=first.endpoint_id)
    assert first.status == Notification.Status.FAILED and "410" in first.last_error
    assert endpoint.is_disabled and "410" in endpoint.disabled_reason

    receiver.answer("/notify", Behaviour(status=200))
    second = notify(merchant)
    deliver_due()
    second.refresh_from_db()
    assert second.status == Notification.Status.FAILED and "disabled" in second.last_error
    assert len(receiver.requests()) == 1  # nothing is sent to a disabled endpoint
    assert second.attempts.count() == 0

    assert endpoint_enable(endpoint) == 2  # both failed while it was disabled: resent
    deliver_due()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == Notification.Status.SUCCEEDED
    assert {r.headers["webhook-id"] for r in receiver.requests()} == {
        first.webhook_id,
        second.webhook_id,
    }


def test_a_redirect_is_a_failure_and_is_not_followed(merchant, notify, receiver):
    receiver.answer(
        "/notify", Behaviour(status=302, headers={"Location": receiver.url("/elsewhere")})
    )
    record = notify(merchant)

    deliver_due()

    record.refresh_from_db()
    attempt = record.attempts.get()
    assert (record.status, attempt.outcome, attempt.error_class, attempt.status_code) == (
        "PENDING",
        "failed",
        "redirect",
        302,
    )
    assert "/elsewhere" in attempt.error
    assert receiver.requests("/elsewhere") == []


def test_resend_sends_again_now_with_the_same_webhook_id(merchant, notify, receiver):
    record = notify(merchant)
    deliver_due()

    record = notification_resend(record)
    assert record.status == Notification.Status.PENDING and record.next_attempt_at <= timezone.now()
    deliver_due()

    first, second = receiver.requests()
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == record.webhook_id
    assert first.body == second.body
    record.refresh_from_db()
    assert record.status == Notification.Status.SUCCEEDED
    assert list(record.attempts.values_list("number", "trigger")) == [
        (1, "schedule"),
        (2, "resend"),
    ]


def test_recover_resends_the_failed_notifications_of_one_merchant_since_a_time(
    make_merchant, notify, receiver, settings
):
    settings.NOTIFY_RETRY_SCHEDULE = [1]
    merchant, _ = make_merchant()
    other, _ = make_merchant()
    receiver.answer("/notify", Behaviour(status=500))
    mine, theirs = notify(merchant), notify(other)
    now = timezone.now()
    deliver_due_at(now)
    deliver_due_at(now + timedelta(seconds=5))
    for record in (mine, theirs):
        record.refresh_from_db()
        assert record.status == Notification.Status.FAILED
    receiver.answer("/notify", Behaviour(status=200))

    assert (
        notifications_recover_failed(merchant_id=merchant.pk, since=now - timedelta(hours=1)) == 1
    )
    deliver_due()

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.status, theirs.status) == (
        Notification.Status.SUCCEEDED,
        Notification.Status.FAILED,
    )


def test_a_timeout_is_a_failed_attempt_with_its_class(merchant, notify, receiver, settings):
    settings.NOTIFY_TOTAL_TIMEOUT = 0.5
    receiver.answer("/notify", Behaviour(hang=True))
    record = notify(merchant)

    deliver_due()

    attempt = record.attempts.get()
    assert (attempt.outcome, attempt.error_class, attempt.status_code) == (
        "failed",
        "timeout",
        None,
    )
    assert 400 <= attempt.duration_ms < 2000


def test_a_refused_connection_is_a_failed_attempt(merchant, notify, receiver, caplog):
    import logging

    record = notify(merchant)
    receiver.stop()  # nobody listens any more

    with caplog.at_level(logging.WARNING, logger="notifications.delivery"):
        deliver_due()

    attempt = record.attempts.get()
    assert (attempt.outcome, attempt.error_class) == ("failed", "connect")
    # and the operator's log says so, as it says each success
    [line] = [r.getMessage() for r in caplog.records if r.name == "notifications.delivery"]
    assert line.startswith(
        f"order {record.out_trade_no}: notifying merchant {merchant.pk} failed ({record.webhook_id}, HTTP -:"
    )


def test_the_response_excerpt_is_at_most_2_kb(merchant, notify, receiver):
    receiver.answer("/notify", Behaviour(status=500, body="x" * 10_000))
    record = notify(merchant)

    deliver_due()

    assert record.attempts.get().response_excerpt == "x" * 2048


def test_attempt_body_is_the_exact_signed_body(merchant, notify, receiver):
    record = notify(merchant)
    deliver_due()
    attempt = Attempt.objects.get(notification=record)
    assert json.loads(attempt.request_body)["data"]["out_trade_no"] == record.out_trade_no


def test_retry_notifications_command_runs_one_pass(merchant, notify, receiver):
    from io import StringIO

    from django.core.management import call_command

    record = notify(merchant)
    out = StringIO()

    call_command("retry_notifications", "--json", stdout=out)

    assert json.loads(out.getvalue())["succeeded"] == 1
    record.refresh_from_db()
    assert record.status == Notification.Status.SUCCEEDED


def test_the_delivery_task_runs_a_pass(merchant, notify, receiver):
    from notifications.tasks import deliver_due as task

    notify(merchant)

    assert task.apply().get()["succeeded"] == 1
    assert task.name == "notifications.deliver_due"


def test_a_keep_alive_connection_is_reused_for_the_next_notification(merchant, notify, receiver):
    receiver.answer("/notify", Behaviour(keep_alive=True))
    notify(merchant)
    deliver_due()
    notify(merchant)
    deliver_due()

    first, second = receiver.requests()
    assert first.client == second.client  # one TCP connection, two requests


def test_a_connection_the_server_dropped_while_idle_is_replaced_and_the_attempt_succeeds(
    merchant, notify, receiver
):
    receiver.answer("/notify", Behaviour(keep_alive=True, drop_after=True))
    notify(merchant)
    deliver_due()
    record = notify(merchant)

    deliver_due()

    record.refresh_from_db()
    assert record.status == Notification.Status.SUCCEEDED and record.attempts.count() == 1
    first, second = receiver.requests()
    assert first.client != second.client


def test_a_reused_connection_closed_without_an_answer_is_retried_once_on_a_new_one(
    merchant, notify, receiver
):
    # the race every keep-alive client meets: the server closes its idle connection just as the
    # next request goes out on it; nothing was answered, so the request goes again, same id
    receiver.answer(
        "/notify", Behaviour(keep_alive=True), Behaviour(drop=True), Behaviour(keep_alive=True)
    )
    notify(merchant)
    deliver_due()
    record = notify(merchant)

    deliver_due()

    record.refresh_from_db()
    assert record.status == Notification.Status.SUCCEEDED and record.attempts.count() == 1
    first, dropped, retried = receiver.requests()
    assert first.client == dropped.client != retried.client
    assert dropped.headers["webhook-id"] == retried.headers["webhook-id"] == record.webhook_id


def test_a_fresh_connection_closed_without_an_answer_is_a_failed_attempt(
    merchant, notify, receiver
):
    receiver.answer("/notify", Behaviour(drop=True))
    record = notify(merchant)

    deliver_due()

    attempt = record.attempts.get()
    assert (attempt.outcome, attempt.error_class, attempt.status_code) == (
        "failed",
        "protocol",
        None,
    )
    assert len(receiver.requests()) == 1


def test_a_record_deleted_while_in_flight_does_not_sink_the_others_of_its_batch(
    merchant, notify, receiver, settings
):
    settings.NOTIFY_TOTAL_TIMEOUT = 1
    receiver.answer("/hang", Behaviour(hang=True))
    doomed = notify(merchant, "/hang")
    deliver_due(budget_seconds=0.2, drain=False)  # leaves the hanging request in flight
    doomed.delete()
    survivor = notify(merchant)

    deliver_due()  # records the doomed one's timeout and the survivor's success in one batch

    survivor.refresh_from_db()
    assert survivor.status == Notification.Status.SUCCEEDED and survivor.attempts.count() == 1


def test_failures_of_one_batch_each_get_their_own_jittered_retry_time(merchant, notify, receiver):
    receiver.answer("/notify", Behaviour(status=503))
    records = [notify(merchant) for _ in range(6)]
    now = timezone.now()

    deliver_due_at(now)

    dues = []
    for record in records:
        record.refresh_from_db()
        assert (record.status, record.step, record.attempt_count, record.last_status_code) == (
            "PENDING",
            1,
            1,
            503,
        )
        dues.append((record.next_attempt_at - now).total_seconds())
    assert all(12 - 0.01 <= d <= 18 + 0.01 for d in dues) and len(set(dues)) == 6
