"""A bank payment's refund goes to the bank simulator over real HTTP: a reliable message
(``refund.requested``), the bank's signed refund notify, and the refund query when the notify
is lost. SUCCEEDED only on the bank's word; a refusal is FAILED with its reason, holds released."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orders.creation import order_create, order_pay_url
from orders.models import Order, Refund
from orders.payments import bank_payment_apply
from orders.refund_bank import refunds_poll_bank
from paysys.contracts import RefundRequested
from paysys.messaging.models import Message
from paysys.sandbox import services as bank_side
from paysys.sandbox.models import BankRefund
from tests.messaging.helpers import deliver_all
from tests.orders.conftest import pay_with_notify_held
from tests.phase_two import run_phase_two
from tests.refunds.helpers import fund, points, refund, settle

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def order(bank, merchant, payer):
    """An order paid at the bank simulator (its notify held; the payment applied as polling would)."""
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="BK-1",
        amount=10_000,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    bank_trade_no = pay_with_notify_held(order_pay_url(order))
    bank_payment_apply(
        out_trade_no=order.out_trade_no,
        bank_trade_no=bank_trade_no,
        amount=10_000,
        currency="CNY",
        paid_at=timezone.now().isoformat(),
        source="poll",
    )
    run_phase_two()
    order.refresh_from_db()
    assert order.status == Order.Status.SUCCESS
    return order


def send_to_bank():
    """The polling worker consumes refund.requested: POSTs each refund to the bank."""
    return deliver_all("orders", topic=RefundRequested.TOPIC)


def test_the_bank_says_yes_by_its_notify(api, merchant, payer, order):
    balance = fund("merchant", merchant.pk)[0]
    response = refund(api, "BK-1", "RF-1", 3_000)
    assert response.status_code == 201 and response.json()["status"] == "PENDING"
    run_phase_two()
    send_to_bank()
    at_bank = BankRefund.objects.get(refund_no=response.json()["refund_no"])
    assert (at_bank.status, at_bank.amount, at_bank.out_trade_no) == (
        "SUCCESS",
        3_000,
        order.out_trade_no,
    )
    assert Refund.objects.get().status == "PENDING"  # not before the bank says so
    assert bank_side.refund_notifies_send_due() == 1  # the bank's signed notify, acknowledged
    assert bank_side.refund_notifies_send_due() == 0
    settle()
    assert (
        api.get(f"/api/v1/refunds/{response.json()['refund_no']}").json()["status"] == "SUCCEEDED"
    )
    assert fund("merchant", merchant.pk) == (balance - 3_000, 0, 0) and points(payer) == (70, 0)


def test_the_bank_refuses_the_refund_is_failed_and_the_holds_released(api, merchant, payer, order):
    balance = fund("merchant", merchant.pk)[0]
    response = refund(api, "BK-1", "RF-1", 3_000, reason="customer cancelled [bank:refuse]")
    run_phase_two()
    send_to_bank()
    bank_side.refund_notifies_send_due()
    settle()
    failed = Refund.objects.get()
    assert failed.status == "FAILED" and "account is closed" in failed.failure_reason
    assert fund("merchant", merchant.pk) == (balance, 0, 0) and points(payer) == (100, 0)
    order.refresh_from_db()
    assert (order.status, order.refunded_amount, order.refunding_amount) == ("SUCCESS", 0, 0)
    assert (
        api.get(f"/api/v1/refunds/{response.json()['refund_no']}").json()["failure_reason"]
        == failed.failure_reason
    )


def test_a_lost_notify_is_found_by_asking_the_bank(api, merchant, order):
    refund(api, "BK-1", "RF-1", 10_000 - 60, reason="[bank:lose-notify]")
    run_phase_two()
    assert (
        refunds_poll_bank(now=timezone.now() + timedelta(minutes=1)) == 1
    )  # not at the bank yet: nothing
    assert Refund.objects.get().status == "PENDING"
    send_to_bank()
    assert bank_side.refund_notifies_send_due() == 0  # the bank never notifies this one
    assert refunds_poll_bank(now=timezone.now() + timedelta(hours=1)) == 1
    settle()
    assert Refund.objects.get().status == "SUCCEEDED"
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("PARTIALLY_REFUNDED", 9_940)


def test_a_bank_that_does_not_answer_keeps_the_message_until_it_does(
    api, merchant, order, settings
):
    refund(api, "BK-1", "RF-1", 1_000)
    run_phase_two()
    real = settings.BANK_QUERY_URL
    settings.BANK_QUERY_URL = "http://127.0.0.1:9/payments/"  # nothing listens there
    send_to_bank()
    message = Message.objects.using("orders").get(topic=RefundRequested.TOPIC)
    assert message.status == Message.Status.SENDING and "refund" in message.last_error
    settings.BANK_QUERY_URL = real
    send_to_bank()
    assert (
        BankRefund.objects.count() == 1
        and Message.objects.using("orders").get(pk=message.pk).status == "CONSUMED"
    )


def test_refund_notify_intake_refuses_unsigned_and_unknown(bank, client):
    from paysys import bank as protocol

    body = b'{"refund_no": "RFnope", "status": "SUCCESS"}'
    assert (
        client.post(
            "/gateway/bank/refund-notify", body, content_type="application/json"
        ).status_code
        == 401
    )
    signed = {protocol.SIGNATURE_HEADER: protocol.sign(body)}
    assert (
        client.post(
            "/gateway/bank/refund-notify", body, content_type="application/json", headers=signed
        ).status_code
        == 404
    )
    bad = b"[1]"
    assert (
        client.post(
            "/gateway/bank/refund-notify",
            bad,
            content_type="application/json",
            headers={protocol.SIGNATURE_HEADER: protocol.sign(bad)},
        ).status_code
        == 400
    )


def test_a_signed_notify_that_does_not_match_its_refund_moves_nothing(api, client, merchant, order):
    """Signed by the bank, but for another amount or order, without them, or absurdly nested:
    refused, the refund stays PENDING and its holds stay."""
    import json

    from paysys import bank as protocol

    response = refund(api, "BK-1", "RF-9", 2_500)
    run_phase_two()
    refund_no = response.json()["refund_no"]

    def post(body: bytes):
        return client.post(
            "/gateway/bank/refund-notify",
            body,
            content_type="application/json",
            headers={protocol.SIGNATURE_HEADER: protocol.sign(body)},
        )

    right = {"amount": 2_500, "out_trade_no": response.json()["out_trade_no"]}
    # another amount, another order, or either left out (a final answer must name both)
    for wrong in (
        {**right, "amount": 999_999},
        {**right, "out_trade_no": "PSsomeoneelse"},
        {"amount": 2_500},
        {"out_trade_no": right["out_trade_no"]},
        {},
    ):
        body = json.dumps({"refund_no": refund_no, "status": "SUCCESS", **wrong}).encode()
        answer = post(body)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "mismatch"
    nested = b"[" * 5000 + b"]" * 5000
    assert post(nested).status_code == 400
    assert Refund.objects.get(refund_no=refund_no).status == "PENDING"
    assert fund("merchant", merchant.pk)[1] == 2_500  # still held
