import pytest
from django.utils import timezone

from notifications.models import Notification
from orders.creation import order_create
from orders.models import Order
from orders.payments import BankPayment, bank_payments_apply
from tests.messaging.helpers import deliver_all
from tests.phase_two import run_phase_two
from tests.statuses import force_status


@pytest.fixture
def paid(merchant, payer):
    """Two bank-paid orders, every service caught up: phase two, vouchers, notifications sent."""
    orders = [
        order_create(
            merchant=merchant,
            merchant_order_no=f"REC-{i}",
            amount=1000 + i,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )[0]
        for i in range(2)
    ]
    payments = [
        BankPayment(
            o.out_trade_no, f"RB-{i}", o.amount, "CNY", "2026-11-27T10:00:00+00:00", "notify"
        )
        for i, o in enumerate(orders)
    ]
    assert bank_payments_apply(payments) == ["APPLIED", "APPLIED"]
    run_phase_two()
    deliver_all("orders")  # order.paid -> accounting (vouchers) and notifications (records)
    force_status(
        Notification.objects,
        status=Notification.Status.SUCCEEDED,
        next_attempt_at=None,
        succeeded_at=timezone.now(),
    )
    return [Order.objects.get(pk=o.pk) for o in orders]
