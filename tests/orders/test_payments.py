"""Bank payment -> order: via the gateway's stored notify, the reliable message to orders and
the TCC ``complete_order`` over orders, funds (merchant credit) and points (payer award).

Phase two, which the participants' workers run in production, runs here with ``run_phase_two()``.
"""

import json

import pytest
from django.test import Client

from accounts.selectors import fund_account_get, points_account_get
from orders.creation import order_create
from orders.models import Order, PaymentRecord
from orders.payments import PaymentNotCompleted, bank_payment_apply
from paysys import bank, tcc
from paysys.contracts import BankPaymentSucceeded, OrderPaid
from paysys.core.money import fee_for
from paysys.gateway.models import BankNotify
from paysys.messaging.models import InboxEntry, Message
from paysys.tcc.models import GlobalTransaction
from tests.concurrency import run_at_once
from tests.messaging.helpers import deliver_all, force_status
from tests.orders.helpers import order_paid_payloads
from tests.phase_two import run_phase_two
from tests.statuses import force_status

# transactional: tcc.run refuses to start inside an open transaction (a test's wrapping one too)
pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="PAY-1",
        amount=1234,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
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
        "/gateway/bank/notify",
        body,
        content_type="application/json",
        headers={bank.SIGNATURE_HEADER: bank.sign(body)},
    )
    assert response.status_code == 200, response.content
    return response


def process():
    """What the workers do: orders consumes the gateway's messages (running the TCC's tries and
    decision), then the orders, funds and points workers run phase two."""
    result = deliver_all("default", topic=BankPaymentSucceeded.TOPIC)
    run_phase_two()
    return result


def merchant_balance(merchant):
    account = fund_account_get(owner_type="merchant", owner_id=merchant.pk, currency="CNY")
    return (account.balance, account.pending_in) if account else (0, 0)


def payer_points(payer):
    account = points_account_get(payer_id=payer.pk)
    return (account.balance, account.pending) if account else (0, 0)


def test_notify_is_stored_and_published_in_one_transaction(order):
    notify(order)

    stored = BankNotify.objects.get()
    message = Message.objects.using("default").get(
        topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment"
    )
    assert message.payload["bank_trade_no"] == stored.bank_trade_no == "B1"
    assert message.queue == "orders" and message.status == "SENDING"
    assert Order.objects.get(pk=order.pk).status == "CREATED"  # the gateway moves nothing else


def test_consumed_notify_completes_order_merchant_credit_and_points_and_publishes_order_paid(
    order, merchant, payer
):
    notify(order)
    process()

    order.refresh_from_db()
    assert (order.status, order.pay_method) == ("SUCCESS", "bank")
    assert order.bank_trade_no == "B1" and order.paid_at is not None
    record = PaymentRecord.objects.get()
    assert (record.outcome, record.order_id, record.source) == ("APPLIED", order.pk, "notify")
    paid = Message.objects.using("orders").filter(topic=OrderPaid.TOPIC)
    assert (
        paid.count()
        == paid.values("message_id").distinct().count() * len({m.consumer for m in paid})
        >= 1
    )
    payload = paid.first().payload
    assert (
        payload
        == OrderPaid(  # exactly the contract, field by field
            order_id=order.pk,
            out_trade_no=order.out_trade_no,
            merchant_id=merchant.pk,
            merchant_order_no="PAY-1",
            payer_id=order.payer_id,
            amount=1234,
            currency="CNY",
            fee=fee_for(1234, merchant.fee_rate_bp),
            bank_trade_no="B1",
            paid_at=Order.objects.get(pk=order.pk).paid_at.isoformat(),
            notify_url=merchant.notify_url,
            method="bank",
            points_awarded=12,
        ).to_payload()
    )
    assert payload["fee"] == 7
    assert merchant_balance(merchant) == (1234 - 7, 0)
    assert payer_points(payer) == (12, 0)
    gtx = GlobalTransaction.objects.get()
    assert (gtx.name, gtx.business_key, gtx.status) == ("complete_order", "bank:B1", "CONFIRMED")
    assert (
        Message.objects.using("default")
        .get(topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment")
        .status
        == "CONSUMED"
    )


def test_the_message_is_acknowledged_at_the_decision_before_phase_two(order, merchant):
    notify(order)
    deliver_all("default", topic=BankPaymentSucceeded.TOPIC)

    # the confirm decision is committed: acknowledged; the order and balances follow in phase two
    assert (
        Message.objects.using("default")
        .get(topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment")
        .status
        == "CONSUMED"
    )
    assert GlobalTransaction.objects.get().status == "CONFIRMING"
    assert Order.objects.get(pk=order.pk).status == "PAYING"
    assert merchant_balance(merchant) == (0, 1227)

    run_phase_two()
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert merchant_balance(merchant) == (1227, 0)


def test_a_failed_try_cancels_and_leaves_the_message_for_recovery_which_completes_it(
    order, merchant, payer, monkeypatch
):
    """funds' try fails (its database stands in for down here; tests/faults cuts it for real):
    the TCC cancels, nothing changed, the message stays SENDING with the error; redelivered
    once funds is back, a new attempt of the same key completes the payment."""
    from django.db import OperationalError

    from accounts import services as accounts_services

    real_hold = accounts_services.fund_credit_hold

    def unreachable(**kwargs):
        raise OperationalError(2003, "Can't connect to MySQL server")

    monkeypatch.setattr(accounts_services, "fund_credit_hold", unreachable)
    notify(order)
    result = process()

    message = Message.objects.using("default").get(
        topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment"
    )
    assert result["failed"] == [message.id]
    assert message.status == "SENDING" and "not completed" in message.last_error
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert merchant_balance(merchant) == (0, 0) and payer_points(payer) == (0, 0)
    assert not PaymentRecord.objects.exists() and order_paid_payloads(order) == []
    assert (
        not InboxEntry.objects.using("orders").filter(consumer="orders.apply_bank_payment").exists()
    )

    monkeypatch.setattr(accounts_services, "fund_credit_hold", real_hold)  # funds is back
    process()  # the resend

    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert merchant_balance(merchant) == (1227, 0) and payer_points(payer) == (12, 0)
    attempts = GlobalTransaction.objects.filter(business_key="bank:B1").order_by("attempt")
    assert [(t.attempt, t.status) for t in attempts] == [(1, "CANCELLED"), (2, "CONFIRMED")]
    assert (
        Message.objects.using("default")
        .get(topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment")
        .status
        == "CONSUMED"
    )


def test_duplicate_notifies_and_redeliveries_complete_once(order):
    notify(order)
    notify(order)
    process()
    force_status(Message.objects.using("default"), "SENDING")  # the broker redelivers too
    process()

    assert BankNotify.objects.get().duplicates == 1
    assert PaymentRecord.objects.count() == 1
    assert (
        Message.objects.using("orders")
        .filter(topic=OrderPaid.TOPIC)
        .values("message_id")
        .distinct()
        .count()
        == 1
    )
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert GlobalTransaction.objects.count() == 1


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
    assert not GlobalTransaction.objects.exists()  # no TCC for a payment that cannot complete
    # consumed: a human acts on the flag; redelivering would not change the verdict
    assert (
        Message.objects.using("default").get(consumer="orders.apply_bank_payment").status
        == "CONSUMED"
    )


def test_payment_for_a_closed_order_is_flagged(order):
    order.transition(Order.Status.CLOSED)

    notify(order)
    process()

    assert PaymentRecord.objects.get().reason == "order is CLOSED, not payable"
    assert Order.objects.get(pk=order.pk).status == "CLOSED"


def test_second_payment_for_a_paid_order_is_flagged(order, merchant):
    notify(order, bank_trade_no="B1")
    process()
    notify(order, bank_trade_no="B2")
    process()

    records = dict(PaymentRecord.objects.values_list("bank_trade_no", "outcome"))
    assert records == {"B1": "APPLIED", "B2": "FLAGGED"}
    assert "already paid by bank trade B1" in PaymentRecord.objects.get(bank_trade_no="B2").reason
    assert Order.objects.get(pk=order.pk).bank_trade_no == "B1"
    assert merchant_balance(merchant) == (1227, 0)


def test_a_second_payment_of_one_order_in_the_same_batch_is_flagged_at_once(order, merchant):
    """Two bank payments of one order in one batch: the second's orders try is refused (the
    order is PAYING), and as the first's CONFIRM is already decided, it is flagged at once."""
    notify(order, bank_trade_no="B1")
    notify(order, bank_trade_no="B2")
    deliver_all("default", topic=BankPaymentSucceeded.TOPIC)

    second = Message.objects.using("default").get(
        payload__bank_trade_no="B2", consumer="orders.apply_bank_payment"
    )
    assert second.status == "CONSUMED"
    run_phase_two()

    records = dict(PaymentRecord.objects.values_list("bank_trade_no", "outcome"))
    assert records == {"B1": "APPLIED", "B2": "FLAGGED"}
    assert merchant_balance(merchant) == (1227, 0)
    assert GlobalTransaction.objects.get(status="CONFIRMED").business_key == "bank:B1"


def test_a_payment_meeting_an_order_held_by_an_undecided_transaction_waits_for_a_resend(
    order, merchant
):
    """The order is PAYING by a transaction that may still cancel: not flagged, resent later."""
    from paysys.tcc import coordinator

    gtx, _ = coordinator.begin(
        "complete_order", business_key="bank:OTHER", branches=[tcc.Branch("orders.pay", {})]
    )
    force_status(
        Order.objects.filter(pk=order.pk), status="PAYING", tcc_xid=gtx.xid, pay_method="bank"
    )

    with pytest.raises(PaymentNotCompleted):
        bank_payment_apply(
            out_trade_no=order.out_trade_no,
            bank_trade_no="B3",
            amount=1234,
            currency="CNY",
            paid_at="2026-11-27T10:00:00+00:00",
            source="notify",
        )
    assert not PaymentRecord.objects.filter(bank_trade_no="B3").exists()


def test_an_order_closed_while_its_payment_was_on_the_way_is_flagged(order):
    """The check passed (CREATED), then the order closed before the orders try: flagged at once."""
    from orders import payments

    real_run = tcc.run_many

    def close_first(*args, **kwargs):
        force_status(Order.objects.filter(pk=order.pk), status="CLOSED")
        return real_run(*args, **kwargs)

    payments.tcc.run_many = close_first
    try:
        outcome = bank_payment_apply(
            out_trade_no=order.out_trade_no,
            bank_trade_no="B9",
            amount=1234,
            currency="CNY",
            paid_at="2026-11-27T10:00:00+00:00",
            source="notify",
        )
    finally:
        payments.tcc.run_many = real_run

    assert outcome == "FLAGGED"
    assert PaymentRecord.objects.get().reason == "order is CLOSED, not payable"


def test_a_notify_and_a_poll_racing_apply_one_payment_once(order, merchant):
    """The consumer (notify) and the poller find the same payment at the same moment: one TCC per
    business key (the bank trade number) is ever confirmed, so it completes once. The loser either
    resumed the same transaction, found it confirmed, or had its orders try refused (retried later)."""

    def apply(source):
        try:
            return bank_payment_apply(
                out_trade_no=order.out_trade_no,
                bank_trade_no="B-RACE",
                amount=order.amount,
                currency=order.currency,
                paid_at="2026-11-27T10:00:00+00:00",
                source=source,
            )
        except PaymentNotCompleted:
            return "retry later"

    outcomes = run_at_once(
        lambda: apply("notify"), lambda: apply("poll")
    )  # raises if either raised
    run_phase_two()

    assert "APPLIED" in outcomes and set(outcomes) <= {"APPLIED", "retry later"}
    record = PaymentRecord.objects.get()
    assert (record.bank_trade_no, record.outcome) == ("B-RACE", "APPLIED")
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert len(order_paid_payloads(order)) == 1
    assert merchant_balance(merchant) == (1227, 0)
    assert GlobalTransaction.objects.filter(status="CONFIRMED").count() == 1
    # the loser, asked again, finds it done
    assert apply("poll") == "APPLIED"
