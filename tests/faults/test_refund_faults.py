"""Refunds under real faults: the funds worker cut off from its database (a TCP proxy the test
closes) while a refund's phase two runs; the broker losing everything while refunds' messages are
in flight. Real Celery workers on MariaDB + Redis; nothing in business code knows."""

from __future__ import annotations

import pytest

from accounting.models import Voucher
from accounts.models import FundEntry
from notifications.models import Notification
from orders import payments as order_payments
from orders.models import Order, Refund
from orders.refunds import refund_create
from paysys import tcc
from paysys.contracts import RefundFinished
from paysys.core.models import Merchant
from paysys.core.services import payer_create
from paysys.messaging import recovery as messaging
from paysys.messaging.models import Message
from paysys.reconcile.checks import reconcile
from paysys.tcc.models import GlobalTransaction
from tests.faults import brokers
from tests.faults.harness import wait_for
from tests.notifications.conftest import receiver  # noqa: F401 - fixture
from tests.refunds.helpers import fund, paid_balance_order, points

pytestmark = [pytest.mark.fault, pytest.mark.django_db(databases="__all__", transaction=True)]

FAST = {"TCC_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1,1,1"}


@pytest.fixture(autouse=True)
def fast_recovery(settings, monkeypatch):
    settings.MESSAGE_RESEND_SCHEDULE = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    settings.TCC_RETRY_SCHEDULE = [1] * 10
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)


def recover() -> None:
    messaging.recover_messages()
    tcc.recover_tcc()


def test_funds_cut_off_during_a_refunds_phase_two_posts_it_once_when_back(
    merchant, payer, workers, db_proxy
):
    order = paid_balance_order(
        merchant, payer
    )  # paid in this process: wallet 0, merchant 9940, 100 points
    merchant_before, wallet_before = fund("merchant", merchant.pk)[0], fund("payer", payer.pk)[0]
    workers("orders,points,accounting,notifications", **FAST)
    workers("funds", ports={"funds": db_proxy.port}, **FAST)
    db_proxy.close()

    refund, created = refund_create(
        merchant=merchant,
        merchant_order_no="RB-1",
        merchant_refund_no="RF-F1",
        amount=4_000,
        reason="fault",
    )  # the tries run here: funds answers this process

    assert created
    gtx = GlobalTransaction.objects.get(xid=refund.tcc_xid)
    wait_for(
        lambda: Refund.objects.get(pk=refund.pk).status == "SUCCEEDED",
        timeout=60,
        what="the orders confirm",
    )
    for _ in range(3):  # funds' confirms are resent while its database is cut off
        wait_for(
            lambda: tcc.recover_tcc()["resent"] > 0,
            timeout=20,
            interval=0.5,
            what="a phase-two resend",
        )
    assert GlobalTransaction.objects.get(pk=gtx.pk).status == "CONFIRMING"
    assert fund("merchant", merchant.pk) == (merchant_before, 4_000, 0)  # held, not posted
    assert fund("payer", payer.pk) == (wallet_before, 0, 4_000)

    db_proxy.open()  # funds is back
    wait_for(
        lambda: recover() or GlobalTransaction.objects.get(pk=gtx.pk).status == "CONFIRMED",
        timeout=90,
        interval=1.1,
        what="funds' confirms to land",
    )

    assert fund("merchant", merchant.pk) == (merchant_before - 4_000, 0, 0)
    assert fund("payer", payer.pk) == (wallet_before + 4_000, 0, 0)
    assert points(payer) == (60, 0)
    assert (
        FundEntry.objects.filter(xid=refund.tcc_xid, kind="posted").count() == 2
    )  # one debit, one credit
    order.refresh_from_db()
    assert (order.status, order.refunded_amount, order.refunding_amount) == (
        "PARTIALLY_REFUNDED",
        4_000,
        0,
    )
    wait_for(
        lambda: recover() or reconcile(grace=0).consistent,
        timeout=60,
        interval=1.1,
        what="the voucher and notification of the refund",
    )
    report = reconcile(grace=0)
    assert report.checked["refunds"] == 1 and not report.problems, report.as_dict()
    assert Order.objects.get(pk=order.pk).refunded_amount == 4_000


@pytest.mark.broker
def test_refunds_in_flight_when_the_broker_loses_everything_converge_once(
    merchant, payer, workers, broker_url, receiver
):
    Merchant.objects.filter(pk=merchant.pk).update(notify_url=receiver.url("/notify"))
    merchant.refresh_from_db()
    order = paid_balance_order(merchant, payer)  # paid in this process: merchant 9940, 100 points
    paid_balance_order(
        merchant, payer_create(name="another payer"), no="RB-2"
    )  # the fee is kept: a whole refund needs more
    merchant_before, wallet_before, points_before = (
        fund("merchant", merchant.pk)[0],
        fund("payer", payer.pk)[0],
        points(payer)[0],
    )
    workers(
        "orders,funds,points", **FAST
    )  # the TCC's participants; accounting and notifications not yet
    # two refunds that make the order whole refunded: their refund.finished waits in the broker
    for number, amount in (("RF-B1", 3_333), ("RF-B2", 6_667)):
        refund_create(
            merchant=merchant,
            merchant_order_no="RB-1",
            merchant_refund_no=number,
            amount=amount,
            reason="fault",
        )
    finished = Message.objects.using("orders").filter(topic=RefundFinished.TOPIC)
    # funds and points consumed theirs (a balance refund's holds were posted by its confirms); the
    # copies for accounting and notifications were kicked to their queues in the same pass
    wait_for(
        lambda: finished.filter(status="CONSUMED").count() == 4,
        what="funds and points to consume refund.finished",
    )
    waiting = finished.exclude(status="CONSUMED")
    assert (
        sorted(waiting.values_list("consumer", flat=True))
        == ["accounting.book_refund"] * 2 + ["notifications.notify_refund"] * 2
    )

    brokers.lose_everything(broker_url)  # the broker loses everything in flight
    workers("accounting,notifications,notify_delivery", **FAST)

    assert not Voucher.objects.filter(source__startswith=f"{RefundFinished.TOPIC}:").exists()
    wait_for(
        lambda: recover() or reconcile(grace=0).settled,
        timeout=90,
        interval=1.1,
        what="recovery to resend refund.finished and every consumer to catch up",
    )

    refunds = list(Refund.objects.filter(order=order))
    assert sorted((r.merchant_refund_no, r.status) for r in refunds) == [
        ("RF-B1", "SUCCEEDED"),
        ("RF-B2", "SUCCEEDED"),
    ]
    order.refresh_from_db()
    assert (order.status, order.refunded_amount, order.refunding_amount) == ("REFUNDED", 10_000, 0)
    assert fund("merchant", merchant.pk) == (merchant_before - 10_000, 0, 0)
    assert fund("payer", payer.pk) == (wallet_before + 10_000, 0, 0) and points(payer) == (
        points_before - 100,
        0,
    )
    for refund in refunds:  # nothing doubled: one voucher, one notification, one debit per refund
        assert (
            Voucher.objects.filter(source=f"{RefundFinished.TOPIC}:{refund.refund_no}").count() == 1
        )
        assert (
            Notification.objects.filter(
                event_type=f"refund.succeeded:{refund.refund_no}", status="SUCCEEDED"
            ).count()
            == 1
        )
        assert (
            FundEntry.objects.filter(xid=refund.tcc_xid, kind="posted", direction="debit").count()
            == 1
        )
    assert not finished.exclude(
        status="CONSUMED"
    ).exists()  # what the broker lost was resent from the outbox
    report = reconcile(grace=0)
    assert report.settled and report.checked["refunds"] == 2, report.as_dict()
