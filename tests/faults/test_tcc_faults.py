"""The payment flows over TCC under real faults (issue 9, "Faults survived").

Real Celery worker processes on MariaDB + Redis; a service's database is cut off with a TCP
proxy the test closes, workers are stopped or SIGKILLed. Nothing in business code knows.
(Framework-level faults - the coordinator killed between decision and phase two, the broker
flushed, suspension - are in tests/tcc.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests
from django.db import connections, transaction
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import FundAccount, FundEntry, PointsAccount
from accounts.selectors import fund_account_get, points_account_get
from accounts.services import wallet_credit
from orders.creation import order_create
from orders.models import Order, PaymentRecord
from paysys import bank, tcc
from paysys.core.money import fee_for, points_for
from paysys.core.services import agreement_issue
from paysys.messaging import recovery as messaging
from paysys.messaging.models import Message
from paysys.tcc.models import GlobalTransaction
from tests.concurrency import run_at_once
from tests.faults.harness import ROOT, Worker, service_env, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.django_db(databases="__all__", transaction=True)]

AMOUNT = 1234
# the workers resend messages and phase two after about a second instead of minutes
FAST = {
    "MESSAGE_RESEND_SCHEDULE": "0,1,1,1,1,1,1,1,1,1",
    "TCC_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1,1,1",
}


@pytest.fixture(autouse=True)
def fast_recovery(settings):
    """This process runs the recovery passes (what beat does): on the same fast schedules."""
    settings.MESSAGE_RESEND_SCHEDULE = [int(x) for x in FAST["MESSAGE_RESEND_SCHEDULE"].split(",")]
    settings.TCC_RETRY_SCHEDULE = [int(x) for x in FAST["TCC_RETRY_SCHEDULE"].split(",")]


@pytest.fixture
def start(broker_url, tmp_path):
    """``start("orders", ports={"funds": proxy.port})``: a real worker; all killed at teardown."""
    started: list[Worker] = []

    def start_worker(
        queues: str, *, ports: dict[str, int] | None = None, name: str | None = None
    ) -> Worker:
        worker = Worker(
            name or queues.replace(",", "-"),
            queues,
            service_env(broker_url, ports=ports, **FAST),
            tmp_path,
        )
        started.append(worker)
        return worker.start()

    yield start_worker
    for worker in started:
        worker.stop()


@pytest.fixture
def order(merchant, payer):
    return order_create(
        merchant=merchant,
        merchant_order_no="TF-1",
        amount=AMOUNT,
        currency="CNY",
        subject="fault",
        payer_id=payer.pk,
    )[0]


def bank_notify(order: Order, bank_trade_no: str = "BT1") -> None:
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


def funds_of(owner_type: str, owner_id: int) -> tuple[int, int, int]:
    account = fund_account_get(owner_type=owner_type, owner_id=owner_id, currency="CNY")
    return (account.balance, account.frozen, account.pending_in) if account else (0, 0, 0)


def points_of(payer) -> tuple[int, int]:
    account = points_account_get(payer_id=payer.pk)
    return (account.balance, account.pending) if account else (0, 0)


def attempts(key: str) -> list[tuple[int, str]]:
    return list(
        GlobalTransaction.objects.filter(business_key=key)
        .order_by("attempt")
        .values_list("attempt", "status")
    )


def notify_message() -> Message:
    return Message.objects.using("default").get(
        topic="bank.payment_succeeded", consumer="orders.apply_bank_payment"
    )


def recover() -> None:
    """One pass of both recoveries, as beat runs them."""
    messaging.recover_messages()
    tcc.recover_tcc()


def assert_nothing_changed(order: Order, merchant, payer) -> None:
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert funds_of("merchant", merchant.pk) == (0, 0, 0)
    assert points_of(payer) == (0, 0)
    assert not PaymentRecord.objects.exists()
    assert not Message.objects.using("orders").filter(topic="order.paid").exists()


def assert_paid_once(order: Order, merchant, payer, *, key: str) -> None:
    """Order SUCCESS, merchant credited amount - fee once, payer awarded once, one order.paid."""
    wait_for(
        lambda: attempts(key)[-1][1] == "CONFIRMED",
        timeout=60,
        interval=0.5,
        what="phase two to finish",
    )
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert funds_of("merchant", merchant.pk) == (
        AMOUNT - fee_for(AMOUNT, merchant.fee_rate_bp),
        0,
        0,
    )
    assert points_of(payer) == (points_for(AMOUNT, "CNY"), 0)
    assert FundEntry.objects.filter(account__owner_type="merchant", kind="posted").count() == 1
    assert (
        Message.objects.using("orders")
        .filter(topic="order.paid")
        .values("message_id")
        .distinct()
        .count()
        == 1
    )
    assert [status for _, status in attempts(key)].count("CONFIRMED") == 1


# --- a participant's database unreachable during its try ------------------------------------


@pytest.mark.parametrize("alias", ["funds", "points"])
def test_participant_database_unreachable_during_try_cancels_then_the_payment_completes_once_back(
    order, merchant, payer, start, db_proxy, alias
):
    """The orders worker (the initiator: it consumes the bank payment and runs the tries) reaches
    ``alias`` through a proxy the test closes. The try fails at once (connection refused), the
    TCC cancels, nothing changes, the message stays unacknowledged; once the database is back the
    resent message starts attempt 2, which completes the payment."""
    start("core,orders", ports={alias: db_proxy.port})
    start("funds,points")
    db_proxy.close()

    bank_notify(order)

    wait_for(
        lambda: "not completed" in notify_message().last_error, timeout=60, what="the TCC to cancel"
    )
    wait_for(
        lambda: attempts("bank:BT1") == [(1, "CANCELLED")],
        timeout=60,
        interval=0.5,
        what="the cancels to run",
    )
    assert alias in GlobalTransaction.objects.get().last_error
    assert notify_message().status == "SENDING"
    assert_nothing_changed(order, merchant, payer)

    db_proxy.open()  # the database is back
    wait_for(
        lambda: recover() or notify_message().status == "CONSUMED",
        timeout=60,
        interval=1.1,
        what="the resent message to complete the payment",
    )
    assert_paid_once(order, merchant, payer, key="bank:BT1")
    # attempt 2's confirms ran at once in the consumer; attempt 1's cancels go through the
    # participants' workers and may land a moment later
    wait_for(
        lambda: recover() or attempts("bank:BT1") == [(1, "CANCELLED"), (2, "CONFIRMED")],
        timeout=30,
        interval=1.1,
        what="attempt 1 cancelled and attempt 2 confirmed",
    )


def lock_waits() -> int:
    with connections["orders"].cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'"
        )
        return cursor.fetchone()[0]


def test_orders_database_cut_during_its_try_cancels_then_the_payment_completes_once_back(
    order, merchant, payer, start, db_proxy
):
    """The orders worker reaches its own database through the proxy. The test holds the order's
    row so the orders try is certainly in flight, then cuts the connection under it: the try
    fails, the TCC cancels, nothing changes; once the database is back the payment completes."""
    start("core,orders", ports={"orders": db_proxy.port})
    start("funds,points")

    with transaction.atomic(using="orders"):
        Order.objects.select_for_update().get(pk=order.pk)
        bank_notify(order)
        wait_for(
            lambda: lock_waits() > 0, timeout=60, what="the orders try to wait on the order row"
        )
        db_proxy.close()  # cut the try's connection while it waits
        wait_for(
            lambda: "not completed" in notify_message().last_error,
            timeout=60,
            what="the TCC to cancel",
        )
    assert GlobalTransaction.objects.get().status in ("CANCELLING", "CANCELLED")
    assert "orders.pay" in GlobalTransaction.objects.get().last_error
    assert notify_message().status == "SENDING"
    assert_nothing_changed(order, merchant, payer)

    db_proxy.open()
    wait_for(
        lambda: recover() or notify_message().status == "CONSUMED",
        timeout=60,
        interval=1.1,
        what="the resent message to complete the payment",
    )
    assert_paid_once(order, merchant, payer, key="bank:BT1")
    # attempt 2's confirms ran at once in the consumer; attempt 1's cancels go through the
    # participants' workers and may land a moment later
    wait_for(
        lambda: recover() or attempts("bank:BT1") == [(1, "CANCELLED"), (2, "CONFIRMED")],
        timeout=30,
        interval=1.1,
        what="attempt 1 cancelled and attempt 2 confirmed",
    )


@pytest.fixture
def web(broker_url, tmp_path):
    """``web(ports=...)``: the API served by a real ``manage.py serve`` process (the Procfile's web); killed at teardown."""
    started: list[subprocess.Popen] = []

    def start_web(*, ports: dict[str, int]) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = open(tmp_path / "web.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env={
                **service_env(broker_url, ports=ports, **FAST),
                "PORT": str(port),
                "WEB_WORKERS": "1",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the web server exited: {(tmp_path / 'web.log').read_text()[-3000:]}"
                )
            try:
                return requests.get(f"{base}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, timeout=60, interval=0.5, what="the web server")
        return base

    yield start_web
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_funds_unreachable_from_the_web_server_a_balance_payment_is_503_and_nothing_changes(
    merchant_and_key, payer, start, web, db_proxy
):
    """The API process reaches funds through a proxy the test closes: the payer's debit try fails,
    the TCC cancels, the merchant gets 503 with Retry-After, and the order and every balance are
    as before; with funds back the same call pays."""
    merchant, api_key = merchant_and_key
    start("core,orders")
    start("funds,points")
    base = web(ports={"funds": db_proxy.port})
    wallet_credit(payer_id=payer.pk, amount=10_000, reason="top-up", credited_by="command:test")
    _, token = agreement_issue(payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:test")
    order = order_create(
        merchant=merchant,
        merchant_order_no="TF-BAL",
        amount=AMOUNT,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]
    key = f"balance:{order.out_trade_no}"

    def pay() -> requests.Response:
        return requests.post(
            f"{base}/api/v1/orders/TF-BAL/pay",
            json={"method": "balance", "payer_token": token},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )

    db_proxy.close()
    refused = pay()

    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0
    wait_for(
        lambda: attempts(key) == [(1, "CANCELLED")],
        timeout=60,
        interval=0.5,
        what="the cancels to run",
    )
    assert GlobalTransaction.objects.get(business_key=key).last_error.startswith("funds.debit: ")
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert funds_of("payer", payer.pk) == (10_000, 0, 0)
    assert funds_of("merchant", merchant.pk) == (0, 0, 0)
    assert points_of(payer) == (0, 0)

    db_proxy.open()
    paid = pay()

    assert paid.status_code == 200, paid.text
    assert (
        paid.json()["status"] == "SUCCESS"
    )  # the orders worker confirmed within the answer's wait
    wait_for(
        lambda: attempts(key)[-1][1] == "CONFIRMED", timeout=60, interval=0.5, what="phase two"
    )
    assert funds_of("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)
    assert funds_of("merchant", merchant.pk) == (
        AMOUNT - fee_for(AMOUNT, merchant.fee_rate_bp),
        0,
        0,
    )
    assert points_of(payer) == (points_for(AMOUNT, "CNY"), 0)


# --- a participant's worker down during phase two -------------------------------------------


def test_funds_worker_stopped_during_phase_two_confirms_once_when_it_returns(
    order, merchant, payer, start
):
    start("core,orders,points")  # no funds worker: its confirms wait in its queue

    bank_notify(order)

    wait_for(
        lambda: Order.objects.get(pk=order.pk).status == "SUCCESS",
        timeout=60,
        what="the orders confirm",
    )
    assert notify_message().status == "CONSUMED"  # acknowledged at the decision
    assert funds_of("merchant", merchant.pk) == (
        0,
        0,
        AMOUNT - fee_for(AMOUNT, merchant.fee_rate_bp),
    )  # pending
    for _ in range(3):  # recovery resends the funds confirm while the worker is down
        wait_for(
            lambda: tcc.recover_tcc()["resent"] > 0,
            timeout=10,
            interval=0.5,
            what="a phase-two resend",
        )
    assert GlobalTransaction.objects.get().status == "CONFIRMING"

    start("funds")  # back: it finds the confirm four times over in its queue

    assert_paid_once(order, merchant, payer, key="bank:BT1")


def test_funds_worker_killed_inside_the_confirm_applies_it_once_after_restart(
    order, merchant, payer, start
):
    """The decision is taken while funds' worker is down; when it starts, its confirm blocks on
    the merchant's account row (held by the test) and its pool process is SIGKILLed inside the
    transaction; the task comes back (acks late) and, with recovery's resends, applies once."""
    start("core,orders,points")
    bank_notify(order)
    wait_for(
        lambda: Order.objects.get(pk=order.pk).status == "SUCCESS",
        timeout=60,
        what="the decision and orders confirm",
    )

    with transaction.atomic(using="funds"):
        FundAccount.objects.select_for_update().get(owner_type="merchant", owner_id=merchant.pk)
        funds = start("funds")
        with connections["funds"].cursor() as cursor:

            def confirm_waits() -> bool:
                cursor.execute(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'"
                )
                return cursor.fetchone()[0] > 0

            wait_for(
                confirm_waits,
                timeout=60,
                what="the funds confirm to wait on the merchant's account",
            )
        killed = funds.kill_child()

    wait_for(
        lambda: recover() or attempts("bank:BT1")[-1][1] == "CONFIRMED",
        timeout=60,
        interval=1.1,
        what=f"the confirm to be redone after killing pid {killed}",
    )
    assert_paid_once(order, merchant, payer, key="bank:BT1")


# --- one wallet, many payments ----------------------------------------------------------------


def test_40_threads_paying_40_orders_from_a_wallet_that_affords_10(
    merchant_and_key, payer, start, monkeypatch, settings
):
    from orders import payments as order_payments

    # 40 callers hold two connections each (default, orders); fewer try threads per alias than the
    # default 8 keep this test's peak well under MariaDB's 151 (a try waits for a free thread
    # within its timeout, and the wallet's row serialises the debits anyway)
    settings.TCC_TRY_THREADS = 4
    merchant, api_key = merchant_and_key
    start("core,orders")
    start("funds,points")
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)  # phase two is checked below
    wallet_credit(
        payer_id=payer.pk, amount=10 * AMOUNT, reason="top-up", credited_by="command:test"
    )
    _, token = agreement_issue(payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:test")
    numbers = [f"W-{n}" for n in range(40)]
    for no in numbers:
        order_create(
            merchant=merchant,
            merchant_order_no=no,
            amount=AMOUNT,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )

    def pay(no: str):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
        return client.post(
            f"/api/v1/orders/{no}/pay", {"method": "balance", "payer_token": token}, format="json"
        )

    responses = run_at_once(*[lambda no=no: pay(no) for no in numbers], timeout=120)

    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 10 and codes.count(402) == 30, codes
    wait_for(
        lambda: (
            recover()
            or not GlobalTransaction.objects.exclude(status__in=["CONFIRMED", "CANCELLED"]).exists()
        ),
        timeout=90,
        interval=1.0,
        what="every TCC to finish phase two",
    )
    assert funds_of("payer", payer.pk) == (0, 0, 0)
    assert funds_of("merchant", merchant.pk) == (
        10 * (AMOUNT - fee_for(AMOUNT, merchant.fee_rate_bp)),
        0,
        0,
    )
    assert PointsAccount.objects.get(payer_id=payer.pk).balance == 10 * points_for(AMOUNT, "CNY")
    paid = {r.json()["merchant_order_no"] for r in responses if r.status_code == 200}
    assert (
        set(Order.objects.filter(status="SUCCESS").values_list("merchant_order_no", flat=True))
        == paid
    )
    assert Order.objects.filter(status="CREATED").count() == 30
