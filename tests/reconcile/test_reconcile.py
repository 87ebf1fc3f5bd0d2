"""manage.py reconcile: the invariants between orders, funds, points, accounting and
notifications hold after real payments, and each kind of break is named."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from accounting.models import Voucher, VoucherLine
from accounts.models import Direction, EntryKind, FundAccount, FundEntry
from notifications.models import Notification
from orders.creation import order_create
from orders.models import Order
from paysys.messaging.models import Message
from tests.messaging.helpers import deliver_all, force_status
from tests.phase_two import run_phase_two
from tests.reconcile.helpers import age, reconcile
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def test_paid_orders_with_every_service_caught_up_are_consistent_and_settled(paid):
    code, report = reconcile("--strict")

    assert code == 0 and report["consistent"] and report["settled"], report
    assert report["checked"]["paid orders"] == 2 and report["checked"]["vouchers"] == 2


def test_a_balance_payment_is_consistent_with_its_wallet_debit(paid, merchant, payer, monkeypatch):
    from accounts.services import wallet_credit
    from orders import payments
    from paysys.core.services import agreement_issue

    monkeypatch.setattr(payments, "PAY_CONFIRM_WAIT_SECONDS", 0)
    wallet_credit(payer_id=payer.pk, amount=10_000, reason="top-up", credited_by="command:test")
    order = order_create(
        merchant=merchant,
        merchant_order_no="REC-BAL",
        amount=2500,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]
    _, token = agreement_issue(payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:test")
    payments.order_pay_with_balance(
        merchant=merchant, merchant_order_no="REC-BAL", payer_token=token
    )
    run_phase_two()
    deliver_all("orders")
    deliver_all("funds")  # wallet.credited -> accounting
    force_status(
        Notification.objects,
        status=Notification.Status.SUCCEEDED,
        next_attempt_at=None,
        succeeded_at=timezone.now(),
    )

    code, report = reconcile("--strict")
    assert code == 0 and report["checked"]["paid orders"] == 3, report

    FundEntry.objects.filter(
        out_trade_no=order.out_trade_no, direction=Direction.DEBIT, kind=EntryKind.POSTED
    ).delete()
    age([order])
    code, report = reconcile()
    assert code == 1 and "wallet debit" in report["problems"]


def test_a_doubled_merchant_credit_is_named(paid):
    original = FundEntry.objects.get(out_trade_no=paid[0].out_trade_no, kind=EntryKind.POSTED)
    FundEntry.objects.create(
        account=original.account,
        kind=EntryKind.POSTED,
        direction=Direction.CREDIT,
        amount=original.amount,
        balance_after=original.balance_after + original.amount,
        xid="f" * 32,
        out_trade_no=original.out_trade_no,
    )

    code, report = reconcile()

    assert code == 1 and not report["consistent"]
    [detail] = report["problems"]["merchant credit"]["examples"]
    assert (
        paid[0].out_trade_no in detail
        and f"2 posted ([{original.amount}, {original.amount}]), expected 1" in detail
    )
    assert (
        "fund account vs entries" in report["problems"]
    )  # the balance no longer matches its entries either


def test_a_balance_changed_behind_the_ledger_is_named(paid, merchant):
    FundAccount.objects.filter(owner_type="merchant", owner_id=merchant.pk).update(balance=1)

    code, report = reconcile()

    assert code == 1 and list(report["problems"]) == ["fund account vs entries"]


def test_a_missing_voucher_is_in_flight_while_recent_then_inconsistent(paid):
    Voucher.objects.filter(source=f"order.paid:{paid[1].out_trade_no}").delete()

    code, report = reconcile()
    assert code == 0 and report["in_flight"] == {"paid orders awaiting their voucher": 1}
    assert reconcile("--strict")[0] == 1

    age(paid)
    code, report = reconcile()
    assert code == 1 and paid[1].out_trade_no in report["problems"]["voucher"]["examples"][0]

    # its order.paid not consumed yet (a resend on its way): in flight again, however old
    force_status(
        Message.objects.using("orders").filter(
            topic="order.paid",
            consumer__startswith="accounting",
            payload__out_trade_no=paid[1].out_trade_no,
        ),
        "SENDING",
    )
    code, report = reconcile()
    assert (
        code == 0
        and report["in_flight"]["paid orders awaiting their voucher (order.paid SENDING)"] == 1
    )


def test_an_unbalanced_voucher_is_named(paid):
    fee = VoucherLine.objects.get(
        voucher__source=f"order.paid:{paid[0].out_trade_no}", account__code="6001"
    )
    VoucherLine.objects.filter(pk=fee.pk).update(credit=fee.credit + 1)

    code, report = reconcile()

    assert code == 1 and list(report["problems"]) == ["unbalanced voucher"]
    assert paid[0].out_trade_no in report["problems"]["unbalanced voucher"]["examples"][0]


def test_money_moved_for_an_order_that_is_not_paid_is_named(paid):
    force_status(Order.objects.filter(pk=paid[0].pk), status="CREATED")

    code, report = reconcile()

    assert code == 1
    assert any(
        "credited, but the order is not paid" in d
        for d in report["problems"]["merchant credit"]["examples"]
    )
    assert any(
        "booked, but the order is not paid" in d for d in report["problems"]["voucher"]["examples"]
    )


def test_dead_messages_are_stuck_listed_and_fail_only_strict(paid):
    force_status(
        Message.objects.using("orders").filter(pk=Message.objects.using("orders").first().pk),
        "DEAD",
        next_send_at=None,
    )

    code, report = reconcile()
    assert code == 0 and report["stuck"] == {"messages DEAD in orders": 1}
    assert reconcile("--strict")[0] == 1


def test_the_text_report_says_what_to_look_at(paid):
    Voucher.objects.filter(source=f"order.paid:{paid[0].out_trade_no}").delete()
    age(paid)
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("reconcile", stdout=out)
    text = out.getvalue()
    assert (
        "INCONSISTENT voucher: 1" in text
        and paid[0].out_trade_no in text
        and "nothing was changed" in text
    )


def test_a_credit_not_posted_while_phase_two_is_unfinished_is_in_flight_however_old(paid):
    """The funds worker down for longer than the grace: its confirm is still on its way."""
    from paysys.tcc.models import GlobalTransaction

    FundEntry.objects.filter(
        out_trade_no=paid[0].out_trade_no, kind=EntryKind.POSTED
    ).delete()  # not posted yet
    force_status(GlobalTransaction.objects.filter(xid=paid[0].tcc_xid), status="CONFIRMING")
    age(paid)

    code, report = reconcile()

    assert (
        report["in_flight"]["paid orders awaiting their merchant credit (phase two unfinished)"]
        == 1
    )
    assert "merchant credit" not in report["problems"]

    force_status(
        GlobalTransaction.objects.filter(xid=paid[0].tcc_xid), status="CONFIRMED"
    )  # it claims done: then it is missing
    assert "merchant credit" in reconcile()[1]["problems"]


def test_a_voucher_booking_another_amount_and_a_credit_differing_from_it_are_named(paid):
    source = f"order.paid:{paid[0].out_trade_no}"
    for code, delta in (
        ("1002", 1000),
        ("6001", 1000),
    ):  # still balanced, but not the order's amount
        line = VoucherLine.objects.get(voucher__source=source, account__code=code)
        VoucherLine.objects.filter(pk=line.pk).update(
            debit=line.debit + delta if line.debit else 0,
            credit=line.credit + delta if line.credit else 0,
        )
    payable = VoucherLine.objects.get(
        voucher__source=f"order.paid:{paid[1].out_trade_no}", account__code="2202"
    )
    fee = VoucherLine.objects.get(
        voucher__source=f"order.paid:{paid[1].out_trade_no}", account__code="6001"
    )
    VoucherLine.objects.filter(pk=payable.pk).update(credit=payable.credit + 5)
    VoucherLine.objects.filter(pk=fee.pk).update(credit=fee.credit - 5)

    code, report = reconcile()

    assert code == 1 and "unbalanced voucher" not in report["problems"]
    assert report["problems"]["voucher"]["examples"] == [
        f"order {paid[0].out_trade_no}: the voucher books {paid[0].amount + 1000}, the order is {paid[0].amount}"
    ]
    [detail] = report["problems"]["merchant credit vs voucher"]["examples"]
    assert (
        paid[1].out_trade_no in detail
        and f"owes the merchant {payable.credit + 5}, the posted credit is {payable.credit}"
        in detail
    )


def test_a_dead_order_paid_leaves_its_voucher_stuck_not_inconsistent(paid):
    Voucher.objects.filter(source=f"order.paid:{paid[0].out_trade_no}").delete()
    force_status(
        Message.objects.using("orders").filter(
            topic="order.paid",
            consumer__startswith="accounting",
            payload__out_trade_no=paid[0].out_trade_no,
        ),
        "DEAD",
        next_send_at=None,
    )
    age(paid)

    code, report = reconcile()

    assert (
        code == 0 and report["stuck"]["paid orders awaiting their voucher (order.paid DEAD)"] == 1
    )


def test_a_reviewed_flagged_payment_is_no_longer_stuck(paid):
    from orders.models import PaymentRecord

    record = PaymentRecord.objects.create(
        bank_trade_no="FLAG-1",
        out_trade_no=paid[0].out_trade_no,
        amount=1,
        currency="CNY",
        paid_at=timezone.now(),
        source="notify",
        outcome=PaymentRecord.Outcome.FLAGGED,
        reason="paid 1 CNY",
    )
    assert reconcile()[1]["stuck"] == {"bank payments FLAGGED, not yet reviewed": 1}
    assert reconcile("--strict")[0] == 1

    PaymentRecord.objects.filter(pk=record.pk).update(reviewed_at=timezone.now())
    assert reconcile("--strict")[0] == 0


@pytest.mark.skipif(
    "connections['notifications'].vendor != 'mysql'",
    reason="a refused TCP connection needs a server",
)
def test_a_database_that_does_not_answer_is_said_not_reconciled(paid):
    """The notifications database refuses connections (a port nothing listens on)."""
    import socket

    from django.core.management import CommandError

    with socket.socket() as s:  # a free port, closed again: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    connection = connections["notifications"]
    connection.close()
    real = connection.settings_dict
    connection.settings_dict = {**real, "HOST": "127.0.0.1", "PORT": port}
    try:
        with pytest.raises(CommandError, match="not reconciled: a service database did not answer"):
            call_command("reconcile", stdout=StringIO())
    finally:
        connection.close()
        connection.settings_dict = real
