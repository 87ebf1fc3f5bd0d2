import json
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from notifications.models import Attempt, Notification
from orders.creation import order_create
from orders.models import Order
from paysys import bank
from tests.messaging.helpers import deliver_all
from tests.phase_two import run_phase_two


@pytest.fixture
def staff_client(db):
    user = get_user_model().objects.create_user(
        "ops-staff", password="pw-ops-1", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)
    return client


def pay_at_bank(merchant, payer) -> Order:
    """An order paid at the bank: notify posted to the gateway, every service caught up."""
    order = order_create(
        merchant=merchant,
        merchant_order_no=f"OPS-{time.monotonic_ns()}",
        amount=1999,
        currency="CNY",
        subject="Green tea",
        payer_id=payer.pk,
    )[0]
    raw = json.dumps(
        {
            "bank_trade_no": f"BOPS{order.pk}X{time.monotonic_ns()}",
            "out_trade_no": order.out_trade_no,
            "amount": 1999,
            "currency": "CNY",
            "status": "SUCCESS",
            "paid_at": timezone.now().isoformat(),
        }
    ).encode()
    response = Client().post(
        "/gateway/bank/notify",
        raw,
        content_type="application/json",
        headers={bank.SIGNATURE_HEADER: bank.sign(raw)},
    )
    assert response.status_code == 200, response.content
    deliver_all("default")  # bank.payment_succeeded -> orders: the TCC
    run_phase_two()
    deliver_all("orders")  # order.paid -> accounting, notifications
    order = Order.objects.get(pk=order.pk)
    assert order.status == Order.Status.SUCCESS
    return order


@pytest.fixture
def paid_at_bank(merchant, payer):
    """A bank-paid order whose merchant notify failed once (the attempt recorded)."""
    order = pay_at_bank(merchant, payer)
    notification = Notification.objects.using("notifications").get(order_id=order.pk)
    Attempt.objects.using("notifications").create(
        notification=notification,
        merchant_id=order.merchant_id,
        number=1,
        started_at=timezone.now(),
        url=notification.url,
        request_headers={},
        request_body=notification.body,
        outcome=Attempt.Outcome.FAILED,
        error_class="connect",
        error="refused",
    )
    return order
