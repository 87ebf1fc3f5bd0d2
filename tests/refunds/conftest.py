import pytest

from tests.phase_two import run_phase_two


@pytest.fixture
def bank(live_server, settings):
    """The bank simulator, the gateway and the refund notify intake, served over real HTTP."""
    settings.BANK_QUERY_URL = live_server.url + "/sandbox/bank/payments/"
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    return live_server


@pytest.fixture
def pay_at_bank(bank, merchant, payer):
    """``pay(no, amount) -> order``: an order paid at the bank simulator (its notify held, the
    payment applied as order polling would), phase two done."""
    from django.utils import timezone

    from orders.creation import order_create, order_pay_url
    from orders.payments import bank_payment_apply
    from tests.orders.conftest import pay_with_notify_held

    def pay(no="BK-1", amount=10_000):
        order, _ = order_create(
            merchant=merchant,
            merchant_order_no=no,
            amount=amount,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )
        bank_trade_no = pay_with_notify_held(order_pay_url(order))
        bank_payment_apply(
            out_trade_no=order.out_trade_no,
            bank_trade_no=bank_trade_no,
            amount=amount,
            currency="CNY",
            paid_at=timezone.now().isoformat(),
            source="poll",
        )
        run_phase_two()
        order.refresh_from_db()
        return order

    return pay


def bank_answers():
    """The polling worker sends refund.requested to the bank; the bank sends its notifies."""
    from paysys.contracts import RefundRequested
    from paysys.sandbox import services as bank_side
    from tests.messaging.helpers import deliver_all

    deliver_all("orders", topic=RefundRequested.TOPIC)
    bank_side.refund_notifies_send_due()
