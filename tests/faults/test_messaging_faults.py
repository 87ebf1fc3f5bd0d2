"""The reliable message service under real faults (issue: "Faults that must be survived").

Each test runs real Celery worker processes on MariaDB + Redis and breaks something for real:
a killed pool process, a flushed broker, a database behind a closed proxy, a stopped worker,
a producer process killed between prepare and confirm.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone

from orders.creation import order_create
from orders.models import Order, PaymentRecord
from paysys import bank
from paysys.contracts import BankPaymentSucceeded, OrderPaid
from paysys.messaging import outbox, recovery, tasks
from paysys.messaging.models import InboxEntry, Message
from tests.faults import brokers
from tests.faults.harness import ROOT, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.django_db(databases="__all__", transaction=True)]


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="F-1",
        amount=1234,
        currency="CNY",
        subject="fault",
        payer_id=payer.pk,
    )
    return order


def bank_notify(order: Order, bank_trade_no: str = "BF1") -> None:
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
        headers={bank.SIGNATURE_HEADER: bank.sign(body)},
    )
    assert response.status_code == 200, response.content


def order_status(order: Order) -> str:
    return Order.objects.get(pk=order.pk).status


def notify_message_consumed() -> bool:
    return (
        Message.objects.using("default")
        .get(topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment")
        .status
        == "CONSUMED"
    )


def recovered_and_consumed() -> bool:
    """One recovery pass (what beat runs), then: has the notify message been acknowledged?"""
    recovery.recover_messages()
    return notify_message_consumed()


def assert_paid_exactly_once(order: Order) -> None:
    wait_for(notify_message_consumed, what="the acknowledgement")
    assert order_status(order) == "SUCCESS"
    assert PaymentRecord.objects.filter(out_trade_no=order.out_trade_no).count() == 1
    assert (
        InboxEntry.objects.using("orders").filter(consumer="orders.apply_bank_payment").count() == 1
    )
    paid = Message.objects.using("orders").filter(topic=OrderPaid.TOPIC)
    assert paid.values("message_id").distinct().count() == 1
    notified = Message.objects.using("default").get(
        topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment"
    )
    assert notified.status == "CONSUMED"
    # completed by one TCC (business key: the bank trade number), whatever was redelivered
    from paysys.tcc.models import GlobalTransaction

    assert (
        GlobalTransaction.objects.filter(
            name="complete_order", status__in=["CONFIRMING", "CONFIRMED"]
        ).count()
        == 1
    )


@pytest.mark.broker
def test_killed_consumer_process_is_redelivered_and_applied_once(order, workers):
    workers("core")
    orders_worker = workers("orders")

    # hold the order's row lock so the orders consumer blocks inside the TCC's orders try
    with transaction.atomic(using="orders"):
        Order.objects.select_for_update().get(pk=order.pk)
        bank_notify(order)
        with connections["orders"].cursor() as cursor:

            def consumer_waits_for_lock():
                cursor.execute(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'"
                )
                return cursor.fetchone()[0] > 0

            wait_for(
                consumer_waits_for_lock, timeout=30, what="the orders try to block on the order row"
            )
        killed = orders_worker.kill_child()

    wait_for(
        lambda: order_status(order) == "SUCCESS",
        timeout=60,
        what=f"redelivery after killing pid {killed}",
    )
    assert_paid_exactly_once(order)


@pytest.mark.broker
def test_broker_losing_everything_loses_nothing(order, workers, broker_url, fast_schedule):
    workers("core")
    bank_notify(order)
    # the gateway's relay has shipped the message to the orders queue; nobody consumes it yet
    wait_for(
        lambda: (
            Message.objects.using("default")
            .filter(
                topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment", send_count=1
            )
            .exists()
        ),
        what="the relay to ship the message",
    )

    brokers.lose_everything(broker_url)  # the broker loses everything in flight
    workers("orders")

    assert order_status(order) == "CREATED"
    wait_for(
        recovered_and_consumed,
        timeout=30,
        interval=0.5,
        what="recovery to resend from the database",
    )
    assert_paid_exactly_once(order)


def test_unreachable_consumer_database_keeps_the_message_until_it_returns(
    order, workers, db_proxy, fast_schedule
):
    workers("core")
    workers("orders", ports={"orders": db_proxy.port})
    db_proxy.close()  # orders' database: connection refused

    bank_notify(order)
    message = Message.objects.using("default").filter(
        topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment"
    )
    wait_for(
        lambda: message.get().last_error, timeout=30, what="the consumer to fail on its database"
    )
    assert message.get().status == "SENDING"
    assert "OperationalError" in message.get().last_error
    recovery.recover_messages()  # resent while still down: fails again, still SENDING
    assert order_status(order) == "CREATED"

    db_proxy.open()
    wait_for(
        recovered_and_consumed,
        timeout=30,
        interval=1.0,
        what="processing once the database is back",
    )
    assert_paid_exactly_once(order)


@pytest.mark.parametrize(
    "committed", [True, False], ids=["business-committed", "business-rolled-back"]
)
def test_producer_killed_between_prepare_and_confirm_is_resolved_by_check_back(committed, settings):
    script = textwrap.dedent(
        f"""
        import os, signal, django
        django.setup()
        from django.db import transaction
        from django.utils import timezone
        from paysys.gateway.models import BankNotify
        from paysys.contracts import BankPaymentSucceeded
        from paysys.messaging import outbox
        event = BankPaymentSucceeded(bank_trade_no="BK-2PC", out_trade_no="PSX", amount=5, currency="CNY",
                                     paid_at="2026-11-27T10:00:00+00:00")
        outbox.prepare(
            event.TOPIC, event.to_payload(),
            business_key="BK-2PC", check_back="gateway.bank_notify_stored",
        )
        with transaction.atomic():
            BankNotify.objects.create(bank_trade_no="BK-2PC", out_trade_no="PSX", amount=5, currency="CNY",
                                      status="SUCCESS", paid_at=timezone.now(), raw_body="{{}}", signature="x")
            if not {committed!r}:
                os.kill(os.getpid(), signal.SIGKILL)  # dies inside its business transaction
        os.kill(os.getpid(), signal.SIGKILL)  # committed, dies before confirm
        """
    )
    from tests.faults.harness import service_env

    env = service_env("memory://", DJANGO_SETTINGS_MODULE="paysys.settings")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, timeout=120)
    assert result.returncode == -9

    rows = Message.objects.using("default").filter(business_key="BK-2PC")
    assert set(rows.values_list("status", flat=True)) == {"PREPARED"}
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)
    recovery.check_back_due("default", now=later)

    if committed:
        assert set(rows.values_list("status", flat=True)) == {"SENDING"}
    else:
        assert not rows.exists()


def pay(order: Order, bank_trade_no: str) -> None:
    bank_notify(order, bank_trade_no)


def accounting_messages():
    return Message.objects.using("orders").filter(topic=OrderPaid.TOPIC, queue="accounting")


def test_accounting_worker_down_backlog_drains_with_one_voucher_per_order(
    merchant, payer, workers, fast_schedule
):
    from accounting.models import Voucher

    workers("core")
    workers("orders")
    orders = [
        order_create(
            merchant=merchant,
            merchant_order_no=f"ACC-{n}",
            amount=1000 + n,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )[0]
        for n in range(5)
    ]
    for n, order in enumerate(orders):
        pay(order, f"BACC{n}")
    wait_for(lambda: Order.objects.filter(status="SUCCESS").count() == 5, what="all orders paid")

    # accounting is down: its messages wait and are resent on schedule, nothing is booked
    for _ in range(2):
        time.sleep(1.1)
        recovery.recover_messages()
    assert Voucher.objects.count() == 0
    assert set(accounting_messages().values_list("status", flat=True)) == {"SENDING"}
    assert min(accounting_messages().values_list("send_count", flat=True)) >= 2

    workers("accounting")  # the service comes back
    wait_for(
        lambda: not accounting_messages().exclude(status="CONSUMED").exists(),
        what="the backlog to drain",
    )

    assert Voucher.objects.count() == 5
    assert sorted(Voucher.objects.values_list("source", flat=True)) == sorted(
        f"{OrderPaid.TOPIC}:{o.out_trade_no}" for o in orders
    )
    assert InboxEntry.objects.using("accounting").count() == 5


def test_poison_message_ends_dead_shows_in_admin_and_resend_after_fix_books_once(
    order, workers, fast_schedule, admin_client
):
    from accounting.models import Account, Voucher
    from accounting.services import chart_of_accounts_seed

    Account.objects.filter(code="6001").delete()  # a misconfigured chart: the fee account is gone
    workers("core")
    workers("orders")
    workers("accounting")

    pay(order, "BPOISON")
    wait_for(
        lambda: accounting_messages().filter(last_error__contains="6001").exists(),
        what="the first failure",
    )
    wait_for(
        lambda: (
            recovery.recover_messages() is not None and accounting_messages().get().status == "DEAD"
        ),
        timeout=60,
        interval=1.1,
        what="the schedule to run out",
    )
    dead = accounting_messages().get()
    assert dead.send_count == len(fast_schedule)
    assert Voucher.objects.count() == 0

    page = admin_client.get(
        "/admin/messaging/message/", {"service": "orders", "status__exact": "DEAD"}
    )
    assert page.status_code == 200
    assert str(dead.message_id) in page.content.decode()

    chart_of_accounts_seed()  # the cause is fixed
    response = admin_client.post(
        "/admin/messaging/message/",
        {"action": "resend_selected", "_selected_action": [dead.pk], "service": "orders"},
        QUERY_STRING="service=orders",
    )
    assert response.status_code in (200, 302)
    wait_for(
        lambda: accounting_messages().get().status == "CONSUMED",
        what="the resent message to be consumed",
    )

    assert Voucher.objects.filter(source=f"{OrderPaid.TOPIC}:{order.out_trade_no}").count() == 1
    assert InboxEntry.objects.using("accounting").count() == 1


@pytest.mark.broker
def test_broker_down_at_publish_the_gateway_still_accepts_and_recovery_delivers(
    order, workers, broker_url, fast_schedule, settings
):
    from tests.faults.conftest import _use_broker
    from tests.faults.harness import TcpProxy

    broker_proxy = TcpProxy(*brokers.address(broker_url)).open()
    _use_broker(brokers.through_port(broker_url, broker_proxy.port))
    broker_proxy.close()  # the broker refuses connections
    try:
        bank_notify(order)  # must still answer 200: the notify and its message are in the database

        message = Message.objects.using("default").filter(
            topic=BankPaymentSucceeded.TOPIC, consumer="orders.apply_bank_payment"
        )
        assert message.get().status == "SENDING"
        # an outage longer than the whole resend schedule: refused publishes are not sends
        settings.MESSAGE_BROKER_RETRY_SECONDS = 0
        for _ in range(len(fast_schedule) + 2):
            recovery.recover_messages()
        assert (message.get().status, message.get().send_count) == ("SENDING", 0)
    finally:
        _use_broker(broker_url)  # the broker is back
        broker_proxy.close()

    workers("orders")
    wait_for(
        recovered_and_consumed, timeout=30, interval=1.1, what="recovery after the broker returned"
    )
    assert_paid_exactly_once(order)


def test_a_trickling_check_back_never_delays_a_bank_payment(order, workers, settings):
    """A producer's check-back server sending a byte a second: the check-back worker waits it out
    to its deadline, while a bank payment sent meanwhile is paid at once by core and orders."""
    from tests.messaging.helpers import RawServer, trickle

    trickler = RawServer(trickle)
    try:
        stack = {"MESSAGE_CHECK_BACK_TIMEOUT": "10", "NOTIFY_ALLOWED_NETWORKS": "127.0.0.0/8"}
        for queue in ("core", "orders", settings.MESSAGE_CHECK_BACK_QUEUE):
            workers(queue, **stack)
        message_id = outbox.prepare(
            "test.ping", {}, business_key="TRICKLE", check_back=trickler.url()
        )
        Message.objects.filter(message_id=message_id).update(
            next_send_at=timezone.now() - timedelta(seconds=1)
        )

        # what beat sends every 5 s: the check-back pass and core's recovery pass
        tasks.check_back.delay()
        tasks.recover_messages.delay()
        wait_for(
            lambda: trickler.connections,
            timeout=30,
            what="the check-back to reach the trickling producer",
        )
        started = time.monotonic()
        bank_notify(order)
        wait_for(lambda: order_status(order) == "SUCCESS", timeout=30, what="the bank payment")
        paid_in = time.monotonic() - started

        assert paid_in < 5, (
            f"the bank payment took {paid_in:.1f} s"
        )  # behind the check-back: 10 s and more
        assert trickler.closed == []  # paid while the check-back was still being trickled at
        assert_paid_exactly_once(order)
        wait_for(
            lambda: Message.objects.filter(
                message_id=message_id, last_error__contains="within 10 s"
            ).exists(),
            timeout=20,
            what="the check-back to give up at its deadline",
        )
        assert set(
            Message.objects.filter(message_id=message_id).values_list("status", flat=True)
        ) == {"PREPARED"}
        wait_for(lambda: trickler.closed, timeout=3, what="the trickling producer to be hung up on")
        assert trickler.connections[0] + 9 < trickler.closed[0] < trickler.connections[0] + 13
    finally:
        trickler.stop()
