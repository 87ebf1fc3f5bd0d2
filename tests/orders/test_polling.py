"""Order polling: when the bank's notify does not come, the platform asks the bank.

A lost notify costs latency, never a payment; a late notify after polling changes nothing.
"""

import json
import multiprocessing
import os
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orders import polling
from orders.creation import order_create, order_pay_url
from orders.expiry import orders_close_expired
from orders.models import Order, PaymentRecord
from orders.polling import _next_poll_at, orders_poll_bank
from paysys import bank as bank_protocol
from paysys.contracts import BankPaymentSucceeded, OrderPaid
from paysys.gateway.models import BankNotify
from paysys.messaging.models import Message
from tests.messaging.helpers import deliver_all
from tests.orders.conftest import pay_with_notify_held as pay_at_bank
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="POLL-1",
        amount=2500,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    return order


@pytest.fixture
def second_order(merchant, payer):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="POLL-2",
        amount=3100,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    return order


def pay_with_notify_held(order):
    """The payer pays, but the bank's notify is held back: as if it were lost on the way."""
    return pay_at_bank(order_pay_url(order))


def poll_now(order):
    Order.objects.filter(pk=order.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    return poll_and_finish()


def poll_and_finish(**kwargs):
    """A polling pass, then phase two of the TCCs it decided (the participants' workers' part)."""
    asked = orders_poll_bank(**kwargs)
    run_phase_two()
    return asked


def test_new_order_is_first_polled_after_the_first_wait(order, settings):
    assert settings.ORDER_POLL_SCHEDULE[0] == 2
    assert 1.5 < (order.next_poll_at - order.created_at).total_seconds() < 3


def test_polling_finds_a_payment_whose_notify_never_came(order, bank):
    bank_trade_no = pay_with_notify_held(order)
    assert BankNotify.objects.count() == 0

    assert poll_now(order) == 1

    order.refresh_from_db()
    assert (order.status, order.bank_trade_no, order.next_poll_at) == (
        "SUCCESS",
        bank_trade_no,
        None,
    )
    assert PaymentRecord.objects.get().source == "poll"
    assert Message.objects.using("orders").filter(topic=OrderPaid.TOPIC).exists()
    # the same TCC as a notify: the merchant is credited and the payer awarded, once
    from accounts.selectors import fund_account_get, points_account_get
    from paysys.core.money import fee_for
    from paysys.tcc.models import GlobalTransaction

    merchant_account = fund_account_get(
        owner_type="merchant", owner_id=order.merchant_id, currency="CNY"
    )
    assert merchant_account.balance == 2500 - fee_for(2500, 60)
    assert points_account_get(payer_id=order.payer_id).balance == 25
    assert GlobalTransaction.objects.get().business_key == f"bank:{bank_trade_no}"


def test_the_late_notify_after_polling_changes_nothing(order, bank):
    pay_with_notify_held(order)
    poll_now(order)
    paid_messages = Message.objects.using("orders").filter(topic=OrderPaid.TOPIC).count()

    Client().post(
        "/sandbox/bank/release", headers={"Authorization": f"Bearer {settings.SANDBOX_TOKEN}"}
    )  # the "lost" notify arrives
    from paysys.sandbox.tasks import resend_bank_notifies

    resend_bank_notifies()
    assert BankNotify.objects.count() == 1
    deliver_all("default", topic=BankPaymentSucceeded.TOPIC)

    assert PaymentRecord.objects.count() == 1
    assert Message.objects.using("orders").filter(topic=OrderPaid.TOPIC).count() == paid_messages
    assert (
        Message.objects.using("default")
        .get(topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment")
        .status
        == "CONSUMED"
    )


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


def make_due(*orders):
    """Due now, asked in the given order."""
    for n, order in enumerate(orders):
        Order.objects.filter(pk=order.pk).update(
            next_poll_at=timezone.now() - timedelta(seconds=len(orders) - n)
        )


def test_one_order_the_bank_cannot_answer_does_not_stop_the_pass(
    order, second_order, bank, monkeypatch
):
    for o in (order, second_order):
        pay_with_notify_held(o)
    real_query = bank_protocol.query_payment

    def query(out_trade_no):
        if out_trade_no == order.out_trade_no:
            raise bank_protocol.BankUnavailable("timed out")
        return real_query(out_trade_no)

    monkeypatch.setattr(bank_protocol, "query_payment", query)
    make_due(order, second_order)

    assert poll_and_finish() == 2

    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert Order.objects.get(pk=second_order.pk).status == "SUCCESS"
    assert Order.objects.get(pk=order.pk).next_poll_at > timezone.now()  # asked again later


def test_one_payment_that_fails_to_apply_does_not_stop_the_pass(
    order, second_order, bank, monkeypatch
):
    failing = pay_with_notify_held(order)
    pay_with_notify_held(second_order)
    real_apply = polling.bank_payment_apply

    def apply(**payment):
        if payment["bank_trade_no"] == failing:
            raise RuntimeError("a bug in one payment")
        return real_apply(**payment)

    monkeypatch.setattr(polling, "bank_payment_apply", apply)
    make_due(order, second_order)

    assert poll_and_finish() == 2

    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert Order.objects.get(pk=second_order.pk).status == "SUCCESS"
    assert list(PaymentRecord.objects.values_list("out_trade_no", flat=True)) == [
        second_order.out_trade_no
    ]


def test_a_pass_over_its_budget_gives_back_what_it_did_not_ask(order, second_order, bank):
    for o in (order, second_order):
        pay_with_notify_held(o)
    make_due(order, second_order)
    before = dict(Order.objects.values_list("pk", "next_poll_at"))

    assert poll_and_finish(budget_seconds=0) == 0

    claimed = Order.objects.filter(pk__in=[order.pk, second_order.pk])
    # not lost, not pushed back: still due as they were, so the next pass asks them first
    assert set(claimed.values_list("status", "poll_count")) == {("CREATED", 0)}
    assert dict(claimed.values_list("pk", "next_poll_at")) == before
    assert poll_and_finish() == 2
    assert set(claimed.values_list("status", flat=True)) == {"SUCCESS"}


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


# --- issue 6: polling never delays payments and never falls behind alone ----------------------


def test_polling_asks_the_bank_concurrently_within_the_bound(
    merchant, payer, settings, monkeypatch
):
    import threading
    import time as _time

    settings.ORDER_POLL_CONCURRENCY = 3
    for i in range(9):
        order_create(
            merchant=merchant,
            merchant_order_no=f"CC-{i}",
            amount=100,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )
    Order.objects.update(next_poll_at=timezone.now() - timedelta(seconds=1))
    lock, in_flight, most = threading.Lock(), [0], [0]

    def slow_bank(out_trade_no):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        _time.sleep(0.2)  # a bank taking its time: only then do questions overlap
        with lock:
            in_flight[0] -= 1
        return None

    monkeypatch.setattr(bank_protocol, "query_payment", slow_bank)

    assert orders_poll_bank() == 9
    assert most[0] == 3


def test_bank_asking_passes_run_on_their_own_queue_not_the_payments_one():
    from paysys.celery import app

    router = app.amqp.router
    for task in ("orders.poll_bank", "orders.close_expired_orders"):
        assert router.route({}, task)["queue"].name == "polling"
    assert "polling" in settings.SERVICE_QUEUES
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    assert any(
        line.startswith("polling:") and "-Q polling" in line for line in procfile.splitlines()
    )


# --- issue 16: polling never floods the bank --------------------------------------------------


def due_orders(merchant, payer, n: int, prefix: str) -> list[Order]:
    """``n`` unpaid orders whose poll is due, the first one due longest."""
    orders = [
        order_create(
            merchant=merchant,
            merchant_order_no=f"{prefix}-{i}",
            amount=100,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )[0]
        for i in range(n)
    ]
    make_due(*orders)
    return orders


def _poll_in_a_child_process(budget_seconds: float) -> None:
    os._exit(0 if orders_poll_bank(budget_seconds=budget_seconds) >= 0 else 1)


def test_two_polling_processes_together_ask_at_most_the_bound_in_any_second(
    merchant, payer, counting_bank, settings
):
    # given 40 due orders, a bound of 10 questions a second, and two polling worker processes
    settings.ORDER_POLL_MAX_PER_SECOND = 10
    orders = due_orders(merchant, payer, 40, "FLOOD")
    connections.close_all()  # the children open their own
    fork = multiprocessing.get_context("fork")

    # when both run a pass at the same time
    started = time.monotonic()
    children = [fork.Process(target=_poll_in_a_child_process, args=(30,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    took = time.monotonic() - started

    # then every order was asked once, never more than 10 questions arrived within one second,
    # and the bound is what made it take seconds (unbounded, 40 questions take a fraction of one)
    assert [child.exitcode for child in children] == [0, 0]
    assert sorted(counting_bank.asked) == sorted(o.out_trade_no for o in orders)
    assert counting_bank.most_in_any(1.0) <= 10
    assert took >= 3.0


def test_a_pass_claims_its_orders_in_a_statement_per_next_poll_time_not_one_per_order(
    merchant, payer, counting_bank
):
    # 30 orders due, one of them polled before (its next wait is another step of the schedule)
    orders = due_orders(merchant, payer, 30, "CLAIM")
    Order.objects.filter(pk=orders[0].pk).update(poll_count=1)

    with CaptureQueriesContext(connections["orders"]) as queries:
        assert orders_poll_bank() == 30

    claims = [
        q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "poll_count" in q["sql"]
    ]
    assert len(claims) == 2, claims  # the 29 first polls together, the second poll alone
    polled = {
        o.pk: (o.poll_count, o.next_poll_at)
        for o in Order.objects.filter(pk__in=[o.pk for o in orders])
    }
    assert polled.pop(orders[0].pk)[0] == 2
    assert {count for count, _ in polled.values()} == {1} and len(
        {at for _, at in polled.values()}
    ) == 1


def test_orders_the_bound_left_unasked_stay_due_and_are_asked_later_longest_due_first(
    merchant, payer, counting_bank, settings
):
    # given 9 due orders and a bound of 3 questions a second, asked one at a time
    settings.ORDER_POLL_MAX_PER_SECOND = 3
    settings.ORDER_POLL_CONCURRENCY = 1
    orders = due_orders(merchant, payer, 9, "LATER")
    before = dict(Order.objects.values_list("out_trade_no", "next_poll_at"))

    # when a pass has 1 s: the bound lets it ask only some of them
    first = orders_poll_bank(budget_seconds=1.0)

    # then it asked the longest due, and the others are still due exactly as they were
    assert 0 < first < 9
    assert counting_bank.asked == [o.out_trade_no for o in orders[:first]]
    rest = Order.objects.filter(out_trade_no__in=[o.out_trade_no for o in orders[first:]])
    assert {(o.poll_count, o.next_poll_at) for o in rest} == {
        (0, before[o.out_trade_no]) for o in rest
    }

    # and later passes ask the rest, in the order they were due: nothing dropped
    while len(counting_bank.asked) < 9:
        assert orders_poll_bank(budget_seconds=1.0) > 0
    assert counting_bank.asked == [o.out_trade_no for o in orders]
    assert set(Order.objects.values_list("poll_count", flat=True)) == {1}


def test_the_expiry_pass_asks_within_the_same_bound(merchant, payer, counting_bank, settings):
    settings.ORDER_POLL_MAX_PER_SECOND = 2
    orders = due_orders(merchant, payer, 6, "EXP")
    Order.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    closed = orders_close_expired(budget_seconds=1.0)

    assert (
        0 < closed < 6 and len(counting_bank.asked) == closed
    )  # the others wait for the next pass
    assert counting_bank.most_in_any(1.0) <= 2
    assert Order.objects.filter(status="CREATED").count() == len(orders) - closed


def store_notify(order, bank_trade_no: str) -> None:
    """The bank's notify reaches the gateway, which stores it and publishes bank.payment_succeeded."""
    body = json.dumps(
        {
            "bank_trade_no": bank_trade_no,
            "out_trade_no": order.out_trade_no,
            "amount": order.amount,
            "currency": order.currency,
            "status": "SUCCESS",
            "paid_at": "2026-11-27T10:00:00+00:00",
        }
    ).encode()
    response = Client().post(
        "/gateway/bank/notify",
        body,
        content_type="application/json",
        headers={bank_protocol.SIGNATURE_HEADER: bank_protocol.sign(body)},
    )
    assert response.status_code == 200, response.content


def test_an_order_whose_notify_is_stored_and_waiting_is_not_asked(
    merchant, payer, counting_bank, settings
):
    # given two due orders; the first one's notify is stored, its message not yet processed by
    # the payments' consumer (queued behind others), but seen by the polling worker's consumer
    settings.MESSAGE_RESEND_SCHEDULE = [0, 60]
    notified, silent = due_orders(merchant, payer, 2, "HELD")
    store_notify(notified, "B-HELD")
    deliver_all("default", consumer="orders.postpone_polling")

    # when a polling pass runs
    assert orders_poll_bank() == 1

    # then only the order without a notify was asked; the other waits for its message
    assert counting_bank.asked == [silent.out_trade_no]
    payment = Message.objects.using("default").get(consumer="orders.apply_bank_payment")
    assert (payment.status, Order.objects.get(pk=notified.pk).status) == ("SENDING", "CREATED")

    # and once the message service's resend window has passed (the message DEAD: orders was
    # down that long), polling asks again, so the payment still completes without a human
    window = timedelta(seconds=60 + 60)
    assert orders_poll_bank(now=timezone.now() + window + timedelta(seconds=1)) == 2
    assert counting_bank.asked.count(notified.out_trade_no) == 1


def test_a_notify_is_followed_by_the_postponing_consumer_on_the_polling_queue():
    from paysys.messaging import registry

    spec = registry.get_consumer("orders.postpone_polling")
    assert (spec.topic, spec.queue, spec.alias) == (BankPaymentSucceeded.TOPIC, "polling", "orders")
    assert registry.get_consumer("orders.apply_bank_payment").queue == "orders"
