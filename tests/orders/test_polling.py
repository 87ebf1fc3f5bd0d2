"""Order polling: when the bank's notify does not come, the platform asks the bank.

A lost notify costs latency, never a payment; a late notify after polling changes nothing.
"""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from orders.models import Order, PaymentRecord
from orders.services import _next_poll_at, order_create, order_pay_url, orders_poll_bank
from paysys.gateway.models import BankNotify
from paysys.messaging.models import Message
from tests.messaging.helpers import deliver_all

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def bank(live_server, settings):
    """The bank simulator and the gateway, served over real HTTP."""
    settings.BANK_QUERY_URL = live_server.url + "/sandbox/bank/payments/"
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    return live_server


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant, merchant_order_no="POLL-1", amount=2500, currency="CNY", subject="s", payer_id=payer.pk
    )
    return order


def pay_with_notify_held(order):
    """The payer pays, but the bank's notify is held back: as if it were lost on the way."""
    response = Client().post(urlsplit(order_pay_url(order)).path, {"hold": True}, content_type="application/json")
    assert response.status_code == 200
    return response.json()["bank_trade_no"]


def poll_now(order):
    Order.objects.filter(pk=order.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    return orders_poll_bank()


def test_new_order_is_first_polled_after_the_first_wait(order, settings):
    assert settings.ORDER_POLL_SCHEDULE[0] == 2
    assert 1.5 < (order.next_poll_at - order.created_at).total_seconds() < 3


def test_polling_finds_a_payment_whose_notify_never_came(order, bank):
    bank_trade_no = pay_with_notify_held(order)
    assert BankNotify.objects.count() == 0

    assert poll_now(order) == 1

    order.refresh_from_db()
    assert (order.status, order.bank_trade_no, order.next_poll_at) == ("SUCCESS", bank_trade_no, None)
    assert PaymentRecord.objects.get().source == "poll"
    assert Message.objects.using("orders").filter(topic="order.paid").exists()


def test_the_late_notify_after_polling_changes_nothing(order, bank):
    pay_with_notify_held(order)
    poll_now(order)
    paid_messages = Message.objects.using("orders").filter(topic="order.paid").count()

    Client().post("/sandbox/bank/release")  # the "lost" notify finally arrives
    from paysys.sandbox.tasks import resend_bank_notifies

    resend_bank_notifies()
    assert BankNotify.objects.count() == 1
    deliver_all("default", topic="bank.payment_succeeded")

    assert PaymentRecord.objects.count() == 1
    assert Message.objects.using("orders").filter(topic="order.paid").count() == paid_messages
    assert Message.objects.using("default").get(topic="bank.payment_succeeded").status == "CONSUMED"


def test_unpaid_order_keeps_being_polled_and_nothing_changes(order, bank):
    assert poll_now(order) == 1

    order.refresh_from_db()
    assert order.status == "CREATED"
    assert order.poll_count == 1
    assert order.next_poll_at > timezone.now()
    assert PaymentRecord.objects.count() == 0


def test_bank_unreachable_polling_asks_again_later(order, settings, live_server):
    settings.BANK_QUERY_URL = "http://127.0.0.1:9/sandbox/bank/payments/"  # connection refused

    assert poll_now(order) == 1

    order.refresh_from_db()
    assert order.status == "CREATED" and order.next_poll_at is not None


def test_poll_schedule_then_every_few_minutes_until_expiry(settings):
    settings.ORDER_POLL_SCHEDULE = [2, 3, 5, 10, 20, 30]
    settings.ORDER_POLL_LATE_INTERVAL = 180
    now = timezone.now()
    order = Order(expires_at=now + timedelta(minutes=30), poll_count=0)
    waits = []
    while True:
        due = _next_poll_at(order, now)
        if due is None:
            break
        waits.append(round((due - now).total_seconds()))
        now, order.poll_count = due, order.poll_count + 1

    assert waits[:6] == [3, 5, 10, 20, 30, 180]
    assert set(waits[5:]) == {180}
    assert now <= order.expires_at
