"""The bank's notifies against the platform's real intake, over HTTP (pytest-django live_server).

The tasks are called directly, as a sandbox worker would run them; the broker is not involved.
"""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from paysys import bank
from paysys.celery import app as celery_app
from paysys.gateway.models import BankNotify
from paysys.sandbox import services
from paysys.sandbox.models import BankNotifyAttempt, BankPayment
from paysys.sandbox.tasks import resend_bank_notifies, send_bank_notifies, send_bank_notify
from tests.sandbox.conftest import pay, sandbox_auth

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def paid(order, options: dict | None = None) -> BankPayment:
    response = pay(order, options)
    assert response.status_code == 200, response.content
    return BankPayment.objects.get(bank_trade_no=response.json()["bank_trade_no"])


def test_notify_is_delivered_signed_and_acknowledged(order, gateway_url):
    payment = paid(order)

    assert send_bank_notify(payment.pk) is True

    stored = BankNotify.objects.get()
    assert (
        stored.bank_trade_no,
        stored.out_trade_no,
        stored.amount,
        stored.currency,
        stored.status,
    ) == (
        payment.bank_trade_no,
        order.out_trade_no,
        1234,
        "CNY",
        "SUCCESS",
    )
    assert stored.paid_at == payment.paid_at
    assert bank.signature_valid(stored.raw_body.encode(), stored.signature)
    assert json.loads(stored.raw_body) == services.payment_document(payment)
    payment.refresh_from_db()
    assert (payment.notify_state, payment.notify_attempts, payment.last_status_code) == (
        "ACKED",
        1,
        200,
    )
    assert payment.acked_at is not None and payment.next_attempt_at is None
    attempt = BankNotifyAttempt.objects.get()
    assert (attempt.number, attempt.status_code, attempt.error, attempt.url) == (
        1,
        200,
        "",
        gateway_url,
    )


def test_an_acknowledged_notify_is_not_sent_again(order, gateway_url):
    payment = paid(order)
    send_bank_notify(payment.pk)

    assert send_bank_notify(payment.pk) is False
    assert resend_bank_notifies() == 0
    assert BankNotifyAttempt.objects.count() == 1
    assert BankNotify.objects.get().duplicates == 0


def test_refused_connection_is_recorded_and_the_resend_pass_delivers_later(
    order, dead_url, live_server, settings
):
    settings.BANK_NOTIFY_URL = dead_url
    payment = paid(order)

    assert send_bank_notify(payment.pk) is True

    payment.refresh_from_db()
    assert (payment.notify_state, payment.notify_attempts, payment.last_status_code) == (
        "PENDING",
        1,
        None,
    )
    assert "ConnectionError" in payment.last_error
    second_due = payment.notify_from + timedelta(seconds=settings.BANK_NOTIFY_SCHEDULE[1])
    assert payment.next_attempt_at == second_due
    assert BankNotify.objects.count() == 0
    assert (
        services.notifies_resend_due(now=second_due - timedelta(milliseconds=1)) == 0
    )  # not due yet

    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    assert services.notifies_resend_due(now=second_due) == 1

    payment.refresh_from_db()
    assert (payment.notify_state, payment.notify_attempts, payment.last_error) == ("ACKED", 2, "")
    assert BankNotify.objects.get().bank_trade_no == payment.bank_trade_no
    assert list(payment.attempts.values_list("number", "status_code")) == [(1, None), (2, 200)]


def test_a_non_2xx_answer_is_not_an_acknowledgement(order, live_server, settings):
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/no-such-endpoint"
    payment = paid(order)

    send_bank_notify(payment.pk)

    payment.refresh_from_db()
    assert (payment.notify_state, payment.last_status_code, payment.last_error) == (
        "PENDING",
        404,
        "HTTP 404",
    )
    assert payment.acked_at is None
    assert payment.next_attempt_at == payment.notify_from + timedelta(
        seconds=settings.BANK_NOTIFY_SCHEDULE[1]
    )


def test_the_bank_gives_up_after_its_schedule_and_admin_retry_starts_over(
    order, dead_url, gateway_url, settings
):
    settings.BANK_NOTIFY_SCHEDULE = [0, 1]
    real_url, settings.BANK_NOTIFY_URL = gateway_url, dead_url
    payment = paid(order)
    send_bank_notify(payment.pk)

    assert services.notifies_resend_due(now=payment.paid_at + timedelta(seconds=1)) == 1

    payment.refresh_from_db()
    assert (payment.notify_state, payment.notify_attempts, payment.next_attempt_at) == (
        "GAVE_UP",
        2,
        None,
    )
    assert services.notifies_resend_due(now=payment.paid_at + timedelta(days=1)) == 0
    assert BankNotifyAttempt.objects.count() == 2

    settings.BANK_NOTIFY_URL = real_url
    assert services.notifies_retry([payment.pk]) == 1
    assert resend_bank_notifies() == 1
    payment.refresh_from_db()
    assert (payment.notify_state, payment.notify_attempts) == ("ACKED", 1)
    assert BankNotify.objects.count() == 1


def test_a_notify_whose_last_sender_died_is_given_up_not_resent(order, settings):
    settings.BANK_NOTIFY_SCHEDULE = [0]
    payment = paid(order)
    # the last attempt was claimed, then its worker died before recording a result
    assert services.notify_claim(payment, now=timezone.now())

    assert (
        services.notifies_resend_due(now=timezone.now() + timedelta(seconds=services.CLAIM_LEASE))
        == 0
    )

    payment.refresh_from_db()
    assert payment.notify_state == "GAVE_UP"
    assert BankNotifyAttempt.objects.count() == 0


def test_only_one_of_two_concurrent_senders_claims_an_attempt(order):
    paid(order)
    first, second = (
        BankPayment.objects.get(),
        BankPayment.objects.get(),
    )  # both read attempt 0 as due
    now = timezone.now()

    assert services.notify_claim(first, now=now) is True
    assert services.notify_claim(second, now=now) is False

    payment = BankPayment.objects.get()
    assert payment.notify_attempts == 1
    assert payment.next_attempt_at == now + timedelta(
        seconds=services.CLAIM_LEASE
    )  # not due while in flight


def test_duplicates_option_sends_extra_copies_the_gateway_stores_once(order, gateway_url):
    payment = paid(order, {"duplicates": 2})

    send_bank_notify(payment.pk)

    stored = BankNotify.objects.get()
    assert (stored.bank_trade_no, stored.duplicates) == (payment.bank_trade_no, 2)
    attempts = list(BankNotifyAttempt.objects.values_list("duplicate", "status_code"))
    assert attempts == [(False, 200), (True, 200), (True, 200)]


def test_delay_option_sends_nothing_before_its_time(order, gateway_url):
    payment = paid(order, {"delay": 60})

    assert send_bank_notify(payment.pk) is False
    assert services.notifies_resend_due() == 0
    assert BankNotify.objects.count() == 0

    assert services.notifies_resend_due(now=payment.paid_at + timedelta(seconds=60)) == 1
    assert BankNotify.objects.count() == 1


@pytest.fixture
def eager_tasks():
    """Tasks run in-process at enqueue time, as if a worker took them at once."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_held_notifies_reach_the_gateway_in_reverse_payment_order_on_release(
    make_order, gateway_url, eager_tasks
):
    orders = [make_order() for _ in range(3)]
    for order in orders:
        paid(order, {"hold": True})
    assert BankNotify.objects.count() == 0

    response = Client().post("/sandbox/bank/release", headers=sandbox_auth())

    assert response.json()["released"] == 3
    received = list(BankNotify.objects.order_by("id").values_list("out_trade_no", flat=True))
    assert received == [o.out_trade_no for o in reversed(orders)]
    assert set(BankPayment.objects.values_list("notify_state", flat=True)) == {"ACKED"}


def test_released_notifies_whose_task_was_lost_keep_their_order_in_the_resend_pass(
    make_order, gateway_url
):
    orders = [make_order() for _ in range(3)]
    for order in orders:
        paid(order, {"hold": True})

    released = services.notifies_release()  # its task goes to an in-memory broker nobody reads
    ids = [p.pk for p in released]

    assert resend_bank_notifies() == 3
    received = list(BankNotify.objects.order_by("id").values_list("out_trade_no", flat=True))
    assert received == [o.out_trade_no for o in reversed(orders)]
    assert send_bank_notifies(ids) == 0  # the late task finds nothing left to send


def test_the_pay_flow_end_to_end_on_eager_tasks(order, gateway_url, eager_tasks):
    response = pay(order)

    assert response.status_code == 200
    stored = BankNotify.objects.get()
    assert stored.bank_trade_no == response.json()["bank_trade_no"]
    assert BankPayment.objects.get().notify_state == "ACKED"


def test_the_platform_can_query_the_bank_over_http(order, live_server, settings):
    settings.BANK_QUERY_URL = live_server.url + "/sandbox/bank/payments/"
    assert bank.query_payment(order.out_trade_no) is None

    payment = paid(order)

    assert bank.query_payment(order.out_trade_no) == services.payment_document(payment)
