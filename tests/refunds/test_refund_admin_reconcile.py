"""Admin: a FLAGGED duplicate bank payment back to the payer in one click (who and why
recorded), the refunds list; reconcile: refunds within what was paid, each SUCCEEDED one with its
debit, points reversal, voucher and notification, no money moved for a FAILED one."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounting.models import Voucher
from accounts.models import FundEntry
from notifications.models import Notification
from orders import payments as order_payments
from orders.models import Order, PaymentRecord, Refund
from orders.payments import bank_payment_apply
from paysys.contracts import RefundRequested
from paysys.messaging.models import Message
from tests.messaging.helpers import deliver_all
from tests.phase_two import run_phase_two
from tests.refunds.conftest import bank_answers
from tests.refunds.helpers import paid_balance_order, refund, settle
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture(autouse=True)
def answer_at_decision(monkeypatch):
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)


def staff(django_user_model, username: str, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(username, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="orders", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def reconcile(*args) -> tuple[int, dict]:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", "--json", *args, stdout=out)
    return exit_.value.code, json.loads(out.getvalue())


def caught_up():
    """Every consumer ran and every notification was answered; nothing is recent any more."""
    settle()
    deliver_all("orders")
    deliver_all("funds")  # wallet.credited (the top-ups)
    force_status(
        Notification.objects,
        status=Notification.Status.SUCCEEDED,
        next_attempt_at=None,
        succeeded_at=timezone.now(),
    )
    Refund.objects.update(finished_at=timezone.now() - timedelta(hours=1))
    Order.objects.update(updated_at=timezone.now() - timedelta(hours=1))


def test_a_flagged_duplicate_payment_is_refunded_to_the_payer_with_who_and_why(
    django_user_model, pay_at_bank
):
    order = pay_at_bank()
    assert (
        bank_payment_apply(
            out_trade_no=order.out_trade_no,
            bank_trade_no="B-DUP",
            amount=10_000,
            currency="CNY",
            paid_at="2026-12-01T10:05:00+00:00",
            source="notify",
        )
        == "FLAGGED"
    )
    viewer = staff(django_user_model, "viewer", "view_paymentrecord")
    reviewer = staff(
        django_user_model, "ana", "view_paymentrecord", "change_paymentrecord", "view_refund"
    )
    record = PaymentRecord.objects.get(bank_trade_no="B-DUP")
    action = {"action": "refund_to_payer", "_selected_action": [record.pk], "index": "0"}

    assert (
        "refund_to_payer"
        not in viewer.post("/admin/orders/paymentrecord/", action).content.decode()
    )
    asked = reviewer.post("/admin/orders/paymentrecord/", action)  # the click asks why first
    assert (
        asked.status_code == 200
        and "B-DUP" in asked.content.decode()
        and 'name="why"' in asked.content.decode()
    )
    no_reason = reviewer.post("/admin/orders/paymentrecord/", {**action, "apply": "1", "why": "  "})
    assert no_reason.status_code == 200 and "This field is required" in no_reason.content.decode()
    assert not Refund.objects.exists()
    confirmed = {**action, "apply": "1", "why": "payer charged twice, ticket 4711"}
    assert reviewer.post("/admin/orders/paymentrecord/", confirmed).status_code == 302
    reviewer.post("/admin/orders/paymentrecord/", confirmed)  # a double click: still one refund

    [dup] = Refund.objects.all()
    assert (dup.kind, dup.amount, dup.requested_by, dup.method) == (
        "duplicate",
        10_000,
        "admin:ana",
        "bank",
    )
    assert "payer charged twice, ticket 4711" in dup.reason and "order already paid" in dup.reason
    record.refresh_from_db()
    assert record.reviewed_at is not None
    assert (
        f"refunded ({dup.refund_no}) by admin:ana: payer charged twice, ticket 4711"
        in record.reason
    )
    [sent] = Message.objects.using("orders").filter(topic=RefundRequested.TOPIC)
    assert sent.payload["bank_trade_no"] == "B-DUP" and sent.payload["amount"] == 10_000
    run_phase_two()
    bank_answers()
    caught_up()
    assert Refund.objects.get().status == "SUCCEEDED"
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("SUCCESS", 0)  # the order's own money stayed
    assert not Voucher.objects.filter(source__startswith="refund.").exists()
    assert (
        reviewer.get(
            "/admin/orders/refund/?kind__exact=duplicate&status__exact=SUCCEEDED"
        ).status_code
        == 200
    )
    code, report = reconcile("--strict")
    assert code == 0, report


def test_refunds_reconcile_clean_and_a_missing_piece_is_named(api, merchant, payer, pay_at_bank):
    paid_balance_order(merchant, payer)
    pay_at_bank(no="R-2")
    refund(api, "RB-1", "RF-1", 2_000)
    bank_refund = refund(api, "R-2", "RF-2", 1_000).json()["refund_no"]
    failed = refund(api, "R-2", "RF-3", 500, reason="[bank:refuse]").json()["refund_no"]
    run_phase_two()
    bank_answers()
    caught_up()
    assert Refund.objects.get(refund_no=failed).status == "FAILED"
    code, report = reconcile("--strict")
    assert code == 0, report
    assert report["checked"]["refunds"] == 3

    FundEntry.objects.filter(
        xid=Refund.objects.get(refund_no=bank_refund).tcc_xid, kind="posted"
    ).delete()
    code, report = reconcile()
    assert code != 0 and "refund merchant debit" in report["problems"]
    assert any(
        bank_refund in example
        for example in report["problems"]["refund merchant debit"]["examples"]
    )


def test_money_moved_for_a_failed_refund_is_named(api, merchant, payer, pay_at_bank):
    pay_at_bank(no="R-1")
    failed = refund(api, "R-1", "RF-1", 500, reason="[bank:refuse]").json()["refund_no"]
    run_phase_two()
    bank_answers()
    caught_up()
    Voucher.objects.create(source=f"refund.finished:{failed}", currency="CNY", description="wrong")
    code, report = reconcile()
    assert "failed refund" in report["problems"]


def test_the_trace_finds_a_refund_by_its_numbers_for_who_may_view_orders(
    django_user_model, api, merchant, payer
):
    order = paid_balance_order(merchant, payer)
    refund_no = refund(api, "RB-1", "RF-T1", 2_000).json()["refund_no"]
    settle()
    ops = staff(django_user_model, "ops", "view_order")
    plain = staff(django_user_model, "plain")

    for q in ("RF-T1", refund_no, Refund.objects.get().tcc_xid):
        page = ops.get("/admin/trace/", {"q": q}).content.decode()
        assert f'id="trace-{order.out_trade_no}"' in page and "order created" in page, q
        assert (
            f"refund {refund_no} SUCCEEDED" in page and "TCC refund_order attempt 1 begun" in page
        ), q
    assert plain.get("/admin/trace/", {"q": "RF-T1"}).status_code == 403
    assert 'id="trace-none"' in ops.get("/admin/trace/", {"q": "RF-nope"}).content.decode()
