"""Reconcile finds each defect a bug could leave, planted consistently (an account's columns and
its entries moved together, so the ledger check alone passes), and does not call a payment in
flight inconsistent."""

import pytest

from accounting.models import Voucher
from accounts.models import Direction, EntryKind, FundEntry
from accounts.selectors import fund_account_mismatches, points_account_mismatches
from accounts.services import wallet_credit
from orders.creation import order_create
from orders.models import Order
from paysys.tcc.models import GlobalTransaction
from tests.reconcile.helpers import (
    age,
    plant_fund_entries,
    plant_points_entries,
    reconcile,
    reconcile_text,
    transaction_row,
)
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

HOLD, POSTED = EntryKind.HOLD, EntryKind.POSTED


def ledgers_agree():
    """The plant moved the columns with the entries: only the new checks can see it."""
    return not fund_account_mismatches() and not points_account_mismatches()


@pytest.fixture
def unpaid(merchant, payer):
    """An order never paid (its one balance payment CANCELLED), and a payer with money."""
    wallet_credit(payer_id=payer.pk, amount=10_000, reason="top-up", credited_by="command:test")
    order = order_create(
        merchant=merchant,
        merchant_order_no="REC-UNPAID",
        amount=2500,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]
    return order, transaction_row("CANCELLED", f"balance:{order.out_trade_no}")


def test_a_wallet_debit_confirmed_after_its_cancel_is_named(paid, unpaid, payer):
    order, cancelled = unpaid
    plant_fund_entries(
        owner_type="payer",
        owner_id=payer.pk,
        direction=Direction.DEBIT,
        kinds=[HOLD, POSTED],
        amount=order.amount,
        xid=cancelled,
        out_trade_no=order.out_trade_no,
    )
    assert ledgers_agree()

    code, text = reconcile_text("--strict")

    assert code == 1 and "INCONSISTENT wallet debit: 1" in text
    assert (
        f"order {order.out_trade_no}: debited, but the order is not paid (it is CREATED): 2500 on payer #{payer.pk} CNY "
        f"posted under xid {cancelled} (CANCELLED)"
    ) in text


def test_points_awarded_for_an_unpaid_order_are_named(paid, unpaid, payer):
    order, cancelled = unpaid
    plant_points_entries(
        payer_id=payer.pk,
        kinds=[HOLD, POSTED],
        points=25,
        xid=cancelled,
        out_trade_no=order.out_trade_no,
    )
    assert ledgers_agree()

    code, report = reconcile("--strict")

    assert code == 1 and list(report["problems"]) == ["points award"]
    [detail] = report["problems"]["points award"]["examples"]
    assert (
        detail.startswith(f"order {order.out_trade_no}: awarded, but the order is not paid")
        and cancelled in detail
    )


def test_holds_left_by_finished_transactions_are_named_and_open_ones_are_not(
    paid, unpaid, merchant, payer
):
    order, cancelled = unpaid
    confirmed = transaction_row("CONFIRMED", "bank:RB-planted")
    trying = transaction_row("TRYING", f"balance:{order.out_trade_no}", attempt=2)
    plant_fund_entries(
        owner_type="payer",
        owner_id=payer.pk,
        direction=Direction.DEBIT,
        kinds=[HOLD],
        amount=2500,
        xid=cancelled,
        out_trade_no=order.out_trade_no,
    )
    plant_fund_entries(
        owner_type="merchant",
        owner_id=merchant.pk,
        direction=Direction.CREDIT,
        kinds=[HOLD],
        amount=7,
        xid=confirmed,
        out_trade_no=paid[0].out_trade_no,
    )
    plant_points_entries(
        payer_id=payer.pk, kinds=[HOLD], points=25, xid=cancelled, out_trade_no=order.out_trade_no
    )
    plant_fund_entries(
        owner_type="payer",
        owner_id=payer.pk,
        direction=Direction.DEBIT,
        kinds=[HOLD],
        amount=100,
        xid=trying,
        out_trade_no=order.out_trade_no,
    )  # an open transaction's hold: in flight
    assert ledgers_agree()

    code, report = reconcile("--strict")

    assert code == 1 and list(report["problems"]) == ["hold of a finished transaction"], report[
        "problems"
    ]
    found = report["problems"]["hold of a finished transaction"]["examples"]
    assert sorted(found) == sorted(
        [
            f"order {order.out_trade_no}: frozen 2500 on payer #{payer.pk} CNY held by xid {cancelled} (CANCELLED), neither posted nor released",
            f"order {paid[0].out_trade_no}: pending_in 7 on merchant #{merchant.pk} CNY held by xid {confirmed} (CONFIRMED), neither posted nor released",
            f"order {order.out_trade_no}: points pending 25 on payer #{payer.pk} points held by xid {cancelled} (CANCELLED), neither posted nor released",
        ]
    )
    assert report["checked"]["open holds"] == 4


def test_a_credit_posted_under_a_cancelled_transaction_instead_of_the_confirmed_one_is_named(paid):
    order = paid[0]
    cancelled = transaction_row("CANCELLED", f"bank:{order.out_trade_no}-earlier")
    # the merchant's hold and credit carry the cancelled xid: columns untouched, entries consistent
    FundEntry.objects.filter(
        out_trade_no=order.out_trade_no, xid=order.tcc_xid, direction=Direction.CREDIT
    ).update(xid=cancelled)
    assert ledgers_agree()

    code, report = reconcile("--strict")

    assert code == 1 and list(report["problems"]) == ["posted under another transaction"]
    [detail] = report["problems"]["posted under another transaction"]["examples"]
    assert detail == (
        f"order {order.out_trade_no}: merchant credit of {order.amount - 6} posted under xid {cancelled} "
        f"(CANCELLED), but the order was paid by xid {order.tcc_xid}"
    )


def test_a_voucher_with_no_lines_is_named(paid):
    Voucher.objects.create(source="wallet.credited:planted", currency="CNY")

    code, text = reconcile_text("--strict")

    assert (
        code == 1
        and "INCONSISTENT unbalanced voucher: 1" in text
        and "wallet.credited:planted: no lines" in text
    )


def test_a_balance_payment_confirming_while_the_orders_worker_is_down_is_in_flight_not_inconsistent(
    paid, merchant, payer, monkeypatch
):
    """The TCC decided to confirm; funds and points ran their confirms (the merchant is credited),
    the orders confirm did not (its worker is down): the order is still PAYING."""
    from orders import payments
    from paysys.core.services import agreement_issue
    from paysys.tcc.phase_two import apply_and_report, pending_items

    monkeypatch.setattr(payments, "PAY_CONFIRM_WAIT_SECONDS", 0)
    wallet_credit(payer_id=payer.pk, amount=10_000, reason="top-up", credited_by="command:test")
    order = order_create(
        merchant=merchant,
        merchant_order_no="REC-FLIGHT",
        amount=2500,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]
    _, token = agreement_issue(payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:test")
    assert (
        payments.order_pay_with_balance(
            merchant=merchant, merchant_order_no="REC-FLIGHT", payer_token=token
        ).status
        == "PAYING"
    )
    gtx = GlobalTransaction.objects.get(business_key=f"balance:{order.out_trade_no}")
    assert gtx.status == "CONFIRMING"
    apply_and_report(
        [item for item in pending_items(gtx) if not item["action"].startswith("orders.")]
    )  # every worker but orders
    assert FundEntry.objects.filter(
        out_trade_no=order.out_trade_no, kind=POSTED, direction=Direction.CREDIT
    ).exists()
    age([order])  # in flight for longer than any grace

    for args in ((), ("--grace", "600")):
        code, report = reconcile(*args)
        assert code == 0 and report["consistent"], report["problems"]
        assert (
            report["in_flight"]["postings of payments confirming (order not yet SUCCESS)"] == 3
        )  # credit, debit, award
    code, text = reconcile_text("--strict")
    assert code == 1 and "INCONSISTENT" not in text  # not settled: it is in flight
    assert "in flight: postings of payments confirming (order not yet SUCCESS): 3" in text

    force_status(
        Order.objects.filter(pk=order.pk), status="CREATED", tcc_xid=""
    )  # no longer held by the transaction: wrong
    code, report = reconcile()
    assert (
        code == 1
        and "merchant credit" in report["problems"]
        and "wallet debit" in report["problems"]
    )
