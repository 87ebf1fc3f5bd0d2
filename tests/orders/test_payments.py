"""Bank payment -> order: via the gateway's stored notify and the reliable message to orders."""

import json

import pytest
from django.db import transaction
from django.test import Client

from orders.models import Order, PaymentRecord
from orders.services import bank_payment_apply, order_create
from paysys.contracts import BankPaymentSucceeded, OrderPaid
from paysys import bank
from paysys.core.money import fee_for
from paysys.gateway.models import BankNotify
from paysys.messaging.models import Message
from tests.concurrency import run_at_once
from tests.messaging.helpers import deliver_all, force_status

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant, merchant_order_no="PAY-1", amount=1234, currency="CNY", subject="s", payer_id=payer.pk
    )
    return order


def notify(order, *, bank_trade_no="B1", amount=None, currency=None, out_trade_no=None):
    body = json.dumps(
        {
            "bank_trade_no": bank_trade_no,
            "out_trade_no": out_trade_no or order.out_trade_no,
            "amount": order.amount if amount is None else amount,
            "currency": currency or order.currency,
            "status": "SUCCESS",
            "paid_at": "2026-11-27T10:00:00+00:00",
        }
    ).encode()
    response = Client().post(
        "/gateway/bank/notify", body, content_type="application/json", headers={bank.SIGNATURE_HEADER: bank.sign(body)}
    )
    assert response.status_code == 200, response.content
    return response


def process():
    """What the workers do: orders consumes the gateway's messages."""
    deliver_all("default", topic=BankPaymentSucceeded.TOPIC)


def test_notify_is_stored_and_published_in_one_transaction(order):
    notify(order)

    stored = BankNotify.objects.get()
    message = Message.objects.using("default").get(topic=BankPaymentSucceeded.TOPIC)
    assert message.payload["bank_trade_no"] == stored.bank_trade_no == "B1"
    assert message.queue == "orders" and message.status == "SENDING"
    assert Order.objects.get(pk=order.pk).status == "CREATED"  # the gateway moves nothing else


def test_consumed_notify_completes_the_order_and_publishes_order_paid(order, merchant):
    notify(order)
    process()

    order.refresh_from_db()
    assert order.status == "SUCCESS"
    assert order.bank_trade_no == "B1" and order.paid_at is not None
    record = PaymentRecord.objects.get()
    assert (record.outcome, record.order_id, record.source) == ("APPLIED", order.pk, "notify")
    paid = Message.objects.using("orders").filter(topic=OrderPaid.TOPIC)
    assert paid.count() == paid.values("message_id").distinct().count() * len({m.consumer for m in paid}) >= 1
    payload = paid.first().payload
    assert payload == OrderPaid(
        order_id=order.pk, out_trade_no=order.out_trade_no, merchant_id=merchant.pk, merchant_order_no="PAY-1",
        payer_id=order.payer_id, amount=1234, currency="CNY", fee=fee_for(1234, merchant.fee_rate_bp),
        bank_trade_no="B1", paid_at=order.paid_at.isoformat(), notify_url=merchant.notify_url,
    ).to_payload()
    assert payload["fee"] == 7
    assert (record.amount, record.currency, record.bank_trade_no) == (1234, "CNY", "B1")
    assert Message.objects.using("default").get(topic=BankPaymentSucceeded.TOPIC).status == "CONSUMED"


def test_duplicate_notifies_and_redeliveries_complete_once(order):
    notify(order)
    notify(order)
    process()
    force_status(Message.objects.using("default"), "SENDING")  # the broker redelivers too
    process()

    assert BankNotify.objects.get().duplicates == 1
    assert PaymentRecord.objects.count() == 1
    assert Message.objects.using("orders").filter(topic=OrderPaid.TOPIC).values("message_id").distinct().count() == 1
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"amount": 1}, "paid 1 CNY, order is 1234 CNY"),
        ({"currency": "USD"}, "paid 1234 USD"),
        ({"out_trade_no": "PSNOSUCHORDER"}, "no order with this out_trade_no"),
    ],
)
def test_mismatched_payment_is_flagged_never_completed(order, change, reason):
    notify(order, **change)
    process()

    record = PaymentRecord.objects.get()
    assert record.outcome == "FLAGGED"
    assert reason in record.reason
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert not Message.objects.using("orders").filter(topic=OrderPaid.TOPIC).exists()
    # consumed: a human acts on the flag; redelivering would not change the verdict
    assert Message.objects.using("default").get().status == "CONSUMED"


def test_payment_for_a_closed_order_is_flagged(order):
    order.transition(Order.Status.CLOSED)

    notify(order)
    process()

    assert PaymentRecord.objects.get().reason == "order is CLOSED, not payable"
    assert Order.objects.get(pk=order.pk).status == "CLOSED"


def test_second_payment_for_a_paid_order_is_flagged(order):
    notify(order, bank_trade_no="B1")
    notify(order, bank_trade_no="B2")
    process()

    records = dict(PaymentRecord.objects.values_list("bank_trade_no", "outcome"))
    assert records == {"B1": "APPLIED", "B2": "FLAGGED"}
    assert Order.objects.get(pk=order.pk).bank_trade_no == "B1"


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_a_notify_and_a_poll_racing_apply_one_payment_once(order):
    """The consumer (notify) and the poller find the same payment at the same moment: on MariaDB
    both used to see no record, and the loser's insert raised IntegrityError (1062)."""
    def apply(source):
        with transaction.atomic(using="orders"):
            return bank_payment_apply(
                out_trade_no=order.out_trade_no, bank_trade_no="B-RACE", amount=order.amount,
                currency=order.currency, paid_at="2026-11-27T10:00:00+00:00", source=source,
            )

    records = run_at_once(lambda: apply("notify"), lambda: apply("poll"))  # raises if either raised

    record = PaymentRecord.objects.get()
    assert (record.bank_trade_no, record.outcome) == ("B-RACE", "APPLIED")
    assert [(r.pk, r.outcome) for r in records] == [(record.pk, "APPLIED")] * 2  # the loser returns the winner's
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    paid = Message.objects.using("orders").filter(topic=OrderPaid.TOPIC)
    assert paid.values("message_id").distinct().count() == 1
