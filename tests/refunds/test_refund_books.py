"""Each refund is booked (a reverse voucher for the refunded amount, the fee kept) and told to
the merchant (signed ``refund.succeeded`` / ``refund.failed``, the order.paid delivery)."""

from __future__ import annotations

import json

import pytest

from accounting.models import Voucher
from notifications.models import Notification
from orders import payments as order_payments
from orders.models import Refund
from orders.refunds import refund_finish
from tests.phase_two import run_phase_two
from tests.refunds.helpers import paid_balance_order, paid_bank_order, refund, settle

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture(autouse=True)
def answer_at_decision(monkeypatch):
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)


def lines(voucher):
    return sorted(
        (line.account.code, line.debit, line.credit)
        for line in voucher.lines.using("accounting").all()
    )


def test_a_balance_refund_reverses_the_wallet_payment_and_the_merchant_is_told(
    api, merchant, payer
):
    paid_balance_order(merchant, payer)
    settle()  # (order.paid's consumers are not run here: only the refund's)
    refund_no = refund(api, "RB-1", "RF-1", 2_500).json()["refund_no"]
    settle()
    voucher = Voucher.objects.using("accounting").get(source=f"refund.finished:{refund_no}")
    assert lines(voucher) == [
        ("2202", 2_500, 0),
        ("2241", 0, 2_500),
    ]  # fee income untouched: the fee is kept
    record = Notification.objects.using("notifications").get(
        event_type=f"refund.succeeded:{refund_no}"
    )
    body = json.loads(record.body)
    assert (
        body["type"] == "refund.succeeded"
        and record.status == "PENDING"
        and record.url == merchant.notify_url
    )
    assert body["data"] | {"finished_at": None} == {
        "refund_no": refund_no,
        "merchant_refund_no": "RF-1",
        "merchant_order_no": "RB-1",
        "out_trade_no": Refund.objects.get().out_trade_no,
        "amount": 2_500,
        "currency": "CNY",
        "status": "SUCCEEDED",
        "reason": "customer cancelled",
        "failure_reason": "",
        "method": "balance",
        "finished_at": None,
    }
    settle()  # a redelivery books and notifies nothing twice
    assert Voucher.objects.using("accounting").filter(source__startswith="refund.").count() == 1


def test_a_bank_refund_books_bank_clearing_and_a_failed_one_books_nothing(api, merchant, payer):
    paid_bank_order(merchant, payer)
    ok = refund(api, "R-1", "RF-1", 1_000).json()["refund_no"]
    refused = refund(api, "R-1", "RF-2", 500).json()["refund_no"]
    run_phase_two()
    refund_finish(ok, succeeded=True)
    refund_finish(refused, succeeded=False, failure_reason="bank refused: account closed")
    assert (
        refund_finish(ok, succeeded=False) is False
    )  # final already: a late answer changes nothing
    settle()
    assert lines(Voucher.objects.using("accounting").get(source=f"refund.finished:{ok}")) == [
        ("1002", 0, 1_000),
        ("2202", 1_000, 0),
    ]
    assert (
        not Voucher.objects.using("accounting").filter(source=f"refund.finished:{refused}").exists()
    )
    failed = Notification.objects.using("notifications").get(event_type=f"refund.failed:{refused}")
    assert json.loads(failed.body)["data"]["failure_reason"] == "bank refused: account closed"
    assert (
        Notification.objects.using("notifications").filter(event_type__startswith="refund.").count()
        == 2
    )
