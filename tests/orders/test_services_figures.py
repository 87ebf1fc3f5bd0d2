"""The figures and verdicts of orders' services (``orders/creation.py``, ``payments.py``,
``polling.py``, ``expiry.py``) that a wrong amount or a wrong status would
change: the branches of a payment (fee, points, credit, debit), why a payment cannot complete an
order, what a flagged payment records, order creation's times and idempotency, the open-orders cap,
and which orders the polling and expiry passes take. Written to kill the mutants that survived the
first mutation run (docs/testing.md, "Mutation testing")."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import polling
from orders.creation import order_create
from orders.expiry import orders_close_expired
from orders.models import Order, PaymentRecord, PayMethod
from orders.participants import ACTION
from orders.payments import (
    BankPayment,
    PaymentNotCompleted,
    _why_not_payable,
    bank_payment_apply,
    pay_branches,
)
from orders.polling import orders_poll_bank
from paysys import bank as bank_protocol
from paysys.core.errors import Conflict, LimitReached
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def create(merchant, payer, no="FIG-1", amount=1999, **kwargs):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no=no,
        amount=amount,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
        **kwargs,
    )
    return order


def by_action(branches):
    return {b.action: b.payload for b in branches}


# --- the branches of one payment -----------------------------------------------------------


def test_a_bank_payment_gives_every_participant_the_same_fee_and_points(merchant, payer):
    # given an order of 19.99 CNY at a merchant charging 60 bp (fee 11.994 -> 12 fen, 19 points)
    order = create(merchant, payer, notify_url="https://shop.example/paid")

    # when its bank payment's branches are built
    branches = pay_branches(
        order,
        method=PayMethod.BANK,
        bank_trade_no="B-7",
        paid_at="2026-11-27T10:00:00+00:00",
        source="poll",
    )

    # then orders, the merchant's credit (amount - fee) and the payer's points carry the same figures
    common = {"out_trade_no": order.out_trade_no, "currency": "CNY"}
    assert [b.action for b in branches] == [ACTION, "funds.credit", "points.award"]
    assert by_action(branches) == {
        ACTION: {
            **common,
            "amount": 1999,
            "method": "bank",
            "bank_trade_no": "B-7",
            "paid_at": "2026-11-27T10:00:00+00:00",
            "source": "poll",
            "fee": 12,
            "points": 19,
            "notify_url": "https://shop.example/paid",
        },
        "funds.credit": {
            **common,
            "owner_type": "merchant",
            "owner_id": merchant.pk,
            "amount": 1987,
        },
        "points.award": {**common, "payer_id": payer.pk, "points": 19},
    }


def test_a_balance_payment_debits_the_payer_the_whole_amount(merchant, payer, issue_agreement):
    # given an order with no notify_url of its own, and the payer's agreement with the merchant
    order = create(merchant, payer)
    agreement, _ = issue_agreement(payer, merchant)

    # when its balance payment's branches are built
    branches = by_action(pay_branches(order, method=PayMethod.BALANCE, agreement=agreement))

    # then the agreement counts the whole amount first, the payer is debited the whole amount,
    # the merchant credited amount - fee, and the merchant's own notify_url is given to orders
    common = {"out_trade_no": order.out_trade_no, "currency": "CNY"}
    assert list(branches) == [
        "core.agreement",
        ACTION,
        "funds.debit",
        "funds.credit",
        "points.award",
    ]
    assert branches["core.agreement"] == {
        **common,
        "agreement_id": agreement.pk,
        "token_prefix": agreement.token_prefix,
        "payer_id": payer.pk,
        "merchant_id": merchant.pk,
        "amount": 1999,
        "day": timezone.localdate().isoformat(),
    }
    assert branches["funds.debit"] == {
        **common,
        "owner_type": "payer",
        "owner_id": payer.pk,
        "amount": 1999,
    }
    assert branches["funds.credit"]["amount"] == 1987
    assert branches[ACTION]["notify_url"] == merchant.notify_url
    assert (
        branches[ACTION]["method"],
        branches[ACTION]["bank_trade_no"],
        branches[ACTION]["source"],
    ) == ("balance", "", "")


def test_a_balance_payment_needs_the_payers_agreement(merchant, payer):
    with pytest.raises(ValueError, match="agreement"):
        pay_branches(create(merchant, payer), method=PayMethod.BALANCE)


def test_no_credit_when_the_fee_takes_everything_and_no_points_under_one_unit(merchant, payer):
    # given a merchant whose fee is the whole amount, and an order of 0.99 CNY
    merchant.fee_rate_bp = 10_000
    merchant.save()
    order = create(merchant, payer, amount=99)

    # when its bank payment's branches are built
    branches = by_action(pay_branches(order, method=PayMethod.BANK))

    # then there is nothing to credit and no point to award: only the orders branch
    assert list(branches) == [ACTION]
    assert (branches[ACTION]["fee"], branches[ACTION]["points"]) == (99, 0)


# --- why a payment cannot complete an order --------------------------------------------------


@pytest.mark.parametrize(
    "fields,amount,currency,reason",
    [
        ({"status": "CREATED"}, 500, "CNY", ""),
        ({"status": "PAYING"}, 500, "CNY", ""),  # its transaction may still cancel
        ({"status": "CLOSED"}, 500, "CNY", "order is CLOSED, not payable"),
        ({"status": "CREATED"}, 499, "CNY", "paid 499 CNY, order is 500 CNY"),
        ({"status": "CREATED"}, 500, "USD", "paid 500 USD, order is 500 CNY"),
        (
            {"status": "SUCCESS", "bank_trade_no": "B-1"},
            500,
            "CNY",
            "order already paid by bank trade B-1",
        ),
        (
            {"status": "SUCCESS", "pay_method": "balance", "tcc_xid": "X-9"},
            500,
            "CNY",
            "order already paid by balance payment X-9",
        ),
    ],
)
def test_why_a_payment_cannot_complete_an_order(fields, amount, currency, reason):
    # given an order of 5.00 CNY in some state; when a payment of amount/currency arrives
    order = Order(amount=500, currency="CNY", **fields)

    # then the verdict names exactly why (or is empty when it may complete it)
    assert (
        _why_not_payable(order, BankPayment("", "B-NEW", amount, currency, "", "notify")) == reason
    )


def test_a_flagged_payment_records_everything_a_human_needs(merchant, payer):
    # given an order of 19.99 CNY; when a bank payment of 1.00 CNY for it arrives by polling
    order = create(merchant, payer)
    outcome = bank_payment_apply(
        out_trade_no=order.out_trade_no,
        bank_trade_no="B-ODD",
        amount=100,
        currency="CNY",
        paid_at="2026-11-27T10:00:00+00:00",
        source="poll",
    )

    # then it is flagged with the order, the figures paid, when, how it was found and why
    assert outcome == "FLAGGED"
    record = PaymentRecord.objects.get()
    assert (
        record.bank_trade_no,
        record.out_trade_no,
        record.order_id,
        record.amount,
        record.currency,
        record.source,
        record.outcome,
    ) == ("B-ODD", order.out_trade_no, order.pk, 100, "CNY", "poll", "FLAGGED")
    assert record.paid_at.isoformat() == "2026-11-27T10:00:00+00:00"
    assert record.reason == "paid 100 CNY, order is 1999 CNY"
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    # and a redelivery of it changes nothing and gets the same verdict
    assert (
        bank_payment_apply(
            out_trade_no=order.out_trade_no,
            bank_trade_no="B-ODD",
            amount=100,
            currency="CNY",
            paid_at="2026-11-27T10:00:00+00:00",
            source="notify",
        )
        == "FLAGGED"
    )
    assert PaymentRecord.objects.get().source == "poll"


def test_a_payment_for_no_order_is_flagged_without_an_order(db):
    outcome = bank_payment_apply(
        out_trade_no="PSNOSUCH",
        bank_trade_no="B-X",
        amount=100,
        currency="CNY",
        paid_at="2026-11-27T10:00:00+00:00",
        source="notify",
    )

    assert outcome == "FLAGGED"
    assert PaymentRecord.objects.values_list("order_id", "out_trade_no").get() == (None, "PSNOSUCH")


# --- creating an order -----------------------------------------------------------------------


def test_a_new_order_expires_and_is_first_polled_on_time(merchant, payer, settings):
    # given an expiry of 15 minutes and a first poll after 4 s
    settings.ORDER_EXPIRY_SECONDS = 900
    settings.ORDER_POLL_SCHEDULE = [4, 7]
    before = timezone.now()

    # when an order is created
    order, created = order_create(
        merchant=merchant,
        merchant_order_no="T-1",
        amount=100,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    after = timezone.now()

    # then it is new, CREATED, with those times, and its out_trade_no is dated and unique-looking
    assert created is True
    order.refresh_from_db()
    assert order.status == "CREATED" and order.poll_count == 0
    assert before + timedelta(seconds=900) <= order.expires_at <= after + timedelta(seconds=900)
    assert before + timedelta(seconds=4) <= order.next_poll_at <= after + timedelta(seconds=4)
    assert (
        order.out_trade_no.startswith("PS" + before.strftime("%Y%m%d"))
        and len(order.out_trade_no) == 26
    )
    assert (order.merchant_id, order.merchant_order_no, order.amount, order.payer_id) == (
        merchant.pk,
        "T-1",
        100,
        payer.pk,
    )


def test_a_replay_names_exactly_the_fields_that_differ(merchant, payer):
    # given an order
    create(merchant, payer, no="R-1", amount=100, notify_url="https://shop.example/a")

    # when it is replayed identically, then with a different amount and notify_url
    same, created = order_create(
        merchant=merchant,
        merchant_order_no="R-1",
        amount=100,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
        notify_url="https://shop.example/a",
    )
    with pytest.raises(Conflict) as refused:
        order_create(
            merchant=merchant,
            merchant_order_no="R-1",
            amount=101,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
            notify_url="",
        )

    # then the first is the same order, the second names amount and notify_url and changes nothing
    assert created is False and Order.objects.get().pk == same.pk
    assert refused.value.code == "idempotency_conflict"
    assert refused.value.fields == {
        "amount": "differs from the existing order",
        "notify_url": "differs from the existing order",
    }
    assert Order.objects.get().amount == 100


def test_a_create_that_loses_the_insert_race_returns_the_winner(merchant, payer, monkeypatch):
    # given another create inserting the same merchant_order_no between the lookup and the insert
    winner = create(merchant, payer, no="RACE")
    real_filter = Order.objects.filter
    calls = []

    def filter_missing_first(*args, **kwargs):
        qs = real_filter(*args, **kwargs)
        if kwargs.get("merchant_order_no") == "RACE" and not calls:
            calls.append(1)
            return qs.none()
        return qs

    monkeypatch.setattr(Order.objects, "filter", filter_missing_first)

    # when the identical create goes on to insert, it gets the winner's order
    order, created = order_create(
        merchant=merchant,
        merchant_order_no="RACE",
        amount=1999,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )

    # and a different one is refused as a conflict
    assert (order.pk, created) == (winner.pk, False)
    calls.clear()
    with pytest.raises(Conflict):
        order_create(
            merchant=merchant,
            merchant_order_no="RACE",
            amount=5,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )
    assert Order.objects.count() == 1


def test_the_open_orders_cap_counts_only_this_merchants_open_unpaid_orders(
    merchant, payer, make_merchant, settings
):
    # given a cap of 2, and this merchant with one paid, one expired and one open order
    settings.ORDER_MAX_OPEN_PER_MERCHANT = 2
    other = make_merchant()[0]
    create(other, payer, no="OTHER-1")
    create(other, payer, no="OTHER-2")
    paid, expired = create(merchant, payer, no="PAID"), create(merchant, payer, no="OLD")
    force_status(Order.objects.filter(pk=paid.pk), status="SUCCESS")
    Order.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    create(merchant, payer, no="OPEN-1")

    # when it creates a second open order, then a third
    create(merchant, payer, no="OPEN-2")
    with pytest.raises(LimitReached) as refused:
        create(merchant, payer, no="OPEN-3")

    # then the second is allowed (cap reached, not passed) and the third refused
    assert refused.value.code == "too_many_open_orders"
    assert "2 open unpaid orders" in str(refused.value)
    assert not Order.objects.filter(merchant_order_no="OPEN-3").exists()


# --- which orders the passes take ------------------------------------------------------------


def test_a_poll_pass_takes_the_longest_due_first_up_to_its_limit(merchant, payer, monkeypatch):
    # given three due orders, not yet paid
    now = timezone.now()
    orders = [create(merchant, payer, no=f"P-{i}") for i in range(3)]
    for i, order in enumerate(orders):  # P-2 is due longest, then P-1, then P-0
        Order.objects.filter(pk=order.pk).update(next_poll_at=now - timedelta(seconds=10 + i))
    asked = []
    monkeypatch.setattr(
        bank_protocol, "query_payment", lambda out_trade_no: asked.append(out_trade_no)
    )

    # when a pass limited to 2 runs
    assert orders_poll_bank(limit=2) == 2

    # then it asked about the two due longest, and moved only their next poll forward
    assert sorted(asked) == sorted([orders[2].out_trade_no, orders[1].out_trade_no])
    rows = {o.merchant_order_no: o for o in Order.objects.all()}
    assert (rows["P-2"].poll_count, rows["P-1"].poll_count, rows["P-0"].poll_count) == (1, 1, 0)
    assert rows["P-2"].next_poll_at > now and rows["P-0"].next_poll_at < now


def test_a_poll_pass_with_nothing_due_asks_nothing(merchant, payer, monkeypatch):
    create(merchant, payer)  # first poll is seconds away
    monkeypatch.setattr(bank_protocol, "query_payment", lambda out_trade_no: pytest.fail("asked"))

    assert orders_poll_bank() == 0


def test_an_expiry_pass_closes_the_oldest_first_up_to_its_limit(merchant, payer, monkeypatch):
    # given three expired unpaid orders
    now = timezone.now()
    orders = [create(merchant, payer, no=f"E-{i}") for i in range(3)]
    for i, order in enumerate(orders):  # E-2 expired longest ago
        Order.objects.filter(pk=order.pk).update(expires_at=now - timedelta(seconds=10 + i))
    monkeypatch.setattr(bank_protocol, "query_payment", lambda out_trade_no: None)

    # when a pass limited to 2 runs, then one with no budget
    assert orders_close_expired(limit=2) == 2
    assert orders_close_expired(budget_seconds=0) == 0

    # then the two oldest are CLOSED and the youngest waits for the next pass
    statuses = dict(Order.objects.values_list("merchant_order_no", "status"))
    assert statuses == {"E-0": "CREATED", "E-1": "CLOSED", "E-2": "CLOSED"}


def test_an_expiry_pass_leaves_an_order_it_found_paid_to_its_payment(merchant, payer, monkeypatch):
    # given an expired order the bank says was paid, and whose payment cannot be completed now
    order = create(merchant, payer)
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    paid = {
        "bank_trade_no": "B-LATE",
        "out_trade_no": order.out_trade_no,
        "amount": 1999,
        "currency": "CNY",
        "status": "SUCCESS",
        "paid_at": "2026-11-27T10:00:00+00:00",
    }
    monkeypatch.setattr(bank_protocol, "query_payment", lambda out_trade_no: paid)

    def not_completed(**kwargs):
        raise PaymentNotCompleted("a service did not answer")

    monkeypatch.setattr(polling, "bank_payment_apply", not_completed)

    # when the expiry pass runs
    closed = orders_close_expired()

    # then it does not close it: the payment is applied by a later pass or the notify
    assert closed == 0
    assert Order.objects.get(pk=order.pk).status == "CREATED"


def test_an_expiry_pass_closes_only_what_it_may(merchant, payer, monkeypatch):
    # given an expired order that something else paid while the pass held it in memory
    order = create(merchant, payer)
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    def paid_meanwhile(out_trade_no):
        force_status(Order.objects.filter(pk=order.pk), status="SUCCESS")
        return None

    monkeypatch.setattr(bank_protocol, "query_payment", paid_meanwhile)

    # when the pass closes it, the transition is refused and not counted
    assert orders_close_expired() == 0
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"


def test_the_next_poll_is_the_scheduled_wait_ahead_and_none_past_expiry(settings):
    # given a schedule of 2, 3 s then every 60 s, and an order expiring in 100 s
    settings.ORDER_POLL_SCHEDULE = [2, 3]
    settings.ORDER_POLL_LATE_INTERVAL = 60
    now = timezone.now()
    order = Order(expires_at=now + timedelta(seconds=100), poll_count=0)

    # then after the first poll the next is 3 s ahead, after the second 60 s ahead
    assert polling._next_poll_at(order, now) == now + timedelta(seconds=3)
    order.poll_count = 1
    assert polling._next_poll_at(order, now) == now + timedelta(seconds=60)
    # a poll exactly at expiry still happens, one past it does not
    assert polling._next_poll_at(order, now + timedelta(seconds=40)) == order.expires_at
    assert polling._next_poll_at(order, now + timedelta(seconds=41)) is None


def test_an_order_waiting_for_the_bank_does_not_hold_back_the_next_ones(
    merchant, payer, monkeypatch
):
    # given two orders expired a minute ago (within the grace period): the bank cannot be asked
    # about the older one, and says the younger was not paid
    now = timezone.now()
    older, younger = create(merchant, payer, no="X-OLD"), create(merchant, payer, no="X-NEW")
    Order.objects.filter(pk=older.pk).update(expires_at=now - timedelta(seconds=61))
    Order.objects.filter(pk=younger.pk).update(expires_at=now - timedelta(seconds=60))

    def bank_answers(out_trade_no):
        if out_trade_no == older.out_trade_no:
            raise bank_protocol.BankUnavailable("timed out")
        return None

    monkeypatch.setattr(bank_protocol, "query_payment", bank_answers)

    # when the expiry pass runs
    closed = orders_close_expired()

    # then the older waits for the bank, and the pass goes on to close the younger
    assert closed == 1
    assert dict(Order.objects.values_list("merchant_order_no", "status")) == {
        "X-OLD": "CREATED",
        "X-NEW": "CLOSED",
    }
