"""Bank payments in batches (``bank_payments_apply``, one ``tcc.run_many`` per relay batch): each
payment gets its own outcome, and one bad payment never sinks its batch-mates."""

import threading

import pytest
from django.db import connections, transaction

from accounts.selectors import fund_account_get
from orders.creation import order_create
from orders.models import Order, PaymentRecord
from orders.payments import BankPayment, PaymentNotCompleted, bank_payments_apply
from paysys.core.models import Merchant
from paysys.core.money import fee_for
from paysys.tcc.models import GlobalTransaction
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def orders_of(merchant, payer, n, prefix="BATCH"):
    return [
        order_create(
            merchant=merchant,
            merchant_order_no=f"{prefix}-{i}",
            amount=1000 + i,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )[0]
        for i in range(n)
    ]


def payment(order, bank_trade_no, amount=None):
    return BankPayment(
        order.out_trade_no,
        bank_trade_no,
        order.amount if amount is None else amount,
        "CNY",
        "2026-11-27T10:00:00+00:00",
        "notify",
    )


def test_a_batch_gives_each_payment_its_own_outcome(merchant, payer):
    orders = orders_of(merchant, payer, 4)
    paid_before = orders[3]
    assert bank_payments_apply([payment(paid_before, "B-0")]) == ["APPLIED"]
    run_phase_two()  # its phase two: SUCCESS

    results = bank_payments_apply(
        [
            payment(orders[0], "B-1"),
            payment(orders[1], "B-2", amount=1),
            payment(orders[2], "B-3"),
            payment(paid_before, "B-4"),
            payment(orders[0], "B-1"),  # a redelivery inside the batch
        ]
    )

    assert results == ["APPLIED", "FLAGGED", "APPLIED", "FLAGGED", "APPLIED"]
    assert GlobalTransaction.objects.filter(business_key="bank:B-1").count() == 1
    run_phase_two()
    assert set(
        Order.objects.filter(pk__in=[orders[0].pk, orders[2].pk]).values_list("status", flat=True)
    ) == {"SUCCESS"}
    assert Order.objects.get(pk=orders[1].pk).status == "CREATED"
    paid = [orders[0], orders[2], paid_before]
    assert fund_account_get(
        owner_type="merchant", owner_id=merchant.pk, currency="CNY"
    ).balance == sum(o.amount - fee_for(o.amount, merchant.fee_rate_bp) for o in paid)


def test_a_payment_that_fails_before_its_tcc_fails_alone(merchant, make_merchant, payer):
    """Its merchant is gone: that payment is not completed (and its message resent); the others are."""
    gone = make_merchant(name="gone")[0]
    good = orders_of(merchant, payer, 3)
    [orphan] = orders_of(gone, payer, 1, prefix="ORPHAN")
    Merchant.objects.filter(pk=gone.pk).delete()

    results = bank_payments_apply(
        [
            payment(good[0], "G-1"),
            payment(orphan, "G-2"),
            payment(good[1], "G-3"),
            payment(good[2], "G-4"),
        ]
    )

    assert results[0] == results[2] == results[3] == "APPLIED"
    assert isinstance(results[1], PaymentNotCompleted) and "DoesNotExist" in str(results[1])
    assert not PaymentRecord.objects.filter(bank_trade_no="G-2").exists()


def test_without_ids_from_bulk_inserts_transactions_still_begin(merchant, payer, monkeypatch):
    """MySQL returns no ids from a bulk insert (MariaDB and SQLite do): they are read back."""
    features = connections["default"].features
    monkeypatch.setattr(type(features), "can_return_rows_from_bulk_insert", False)
    orders = orders_of(merchant, payer, 3)

    results = bank_payments_apply([payment(o, f"M-{i}") for i, o in enumerate(orders)])

    assert results == ["APPLIED"] * 3
    run_phase_two()
    assert set(
        Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("status", flat=True)
    ) == {"SUCCESS"}


@pytest.mark.skipif("connections['orders'].vendor != 'mysql'", reason="SQLite takes no row locks")
def test_one_locked_order_fails_alone_the_others_of_its_batch_complete(merchant, payer, settings):
    """A row lock held elsewhere stops the batch's try (lock wait of half TCC_TRY_TIMEOUT); the
    tries are redone one by one and only the locked order's waits, and fails, again."""
    settings.TCC_TRY_TIMEOUT = 2
    orders = orders_of(merchant, payer, 4)
    locked, release = threading.Event(), threading.Event()

    def hold_the_row():
        with transaction.atomic(using="orders"):
            Order.objects.select_for_update().filter(pk=orders[1].pk).get()
            locked.set()
            release.wait(10)
        connections["orders"].close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert locked.wait(5)
        results = bank_payments_apply([payment(o, f"L-{i}") for i, o in enumerate(orders)])
    finally:
        release.set()
        holder.join()

    assert [r if isinstance(r, str) else "not completed" for r in results] == [
        "APPLIED",
        "not completed",
        "APPLIED",
        "APPLIED",
    ]
    assert "Lock wait timeout" in str(results[1])
    run_phase_two()
    assert bank_payments_apply([payment(orders[1], "L-1")]) == [
        "APPLIED"
    ]  # the resend completes it


def test_a_second_bank_payment_of_an_order_whose_first_is_confirmed_is_flagged_at_once(
    merchant, payer
):
    [order] = orders_of(merchant, payer, 1)

    first, second = bank_payments_apply([payment(order, "D-1"), payment(order, "D-2")])

    assert (first, second) == ("APPLIED", "FLAGGED")  # not left to a resend a minute later
    record = PaymentRecord.objects.get(bank_trade_no="D-2")
    assert (
        record.outcome == "FLAGGED"
        and "completing" in record.reason
        and "bank:D-1" in record.reason
    )
    run_phase_two()
    assert Order.objects.get(pk=order.pk).bank_trade_no == "D-1"


def test_a_redelivery_while_its_own_confirm_is_on_its_way_is_applied_not_flagged(merchant, payer):
    [order] = orders_of(merchant, payer, 1)
    assert bank_payments_apply([payment(order, "R-1")]) == ["APPLIED"]
    assert Order.objects.get(pk=order.pk).status == "PAYING"  # phase two has not run

    assert bank_payments_apply([payment(order, "R-1")]) == ["APPLIED"]

    assert not PaymentRecord.objects.filter(
        bank_trade_no="R-1"
    ).exists()  # written by the confirm only
    run_phase_two()
    assert PaymentRecord.objects.get(bank_trade_no="R-1").outcome == "APPLIED"
