"""``orders.pay``, the orders participant, called as the framework calls it: inside
``atomic(using="orders")`` (the barrier, which the framework adds, is tested in tests/tcc)."""

import pytest
from django.db import transaction

from orders.models import Order, OrderNotPayable, PaymentRecord
from orders.participants import pay_cancel, pay_confirm, pay_try
from orders.services import order_create
from paysys import tcc
from paysys.tcc.registry import BranchOp, get_participant
from tests.orders.helpers import order_paid_payloads

pytestmark = pytest.mark.django_db(databases="__all__")
op_name = {pay_try: "try", pay_confirm: "confirm", pay_cancel: "cancel"}


@pytest.fixture
def order(merchant, payer):
    return order_create(merchant=merchant, merchant_order_no="P-1", amount=1234, currency="CNY", subject="s",
                        payer_id=payer.pk)[0]


def payload(order, **overrides):
    return {
        "out_trade_no": order.out_trade_no, "currency": "CNY", "amount": 1234, "method": "bank",
        "bank_trade_no": "B1", "paid_at": "2026-11-27T10:00:00+00:00", "source": "notify", "fee": 7, "points": 12,
        "notify_url": "https://shop.example/n", **overrides,
    }


def run(op, order, xid="X1", **overrides):
    """One branch's op, as the framework calls it (a batched op with one op)."""
    with transaction.atomic(using="orders"):
        get_participant("orders.pay").apply(op_name[op], [BranchOp(xid, payload(order, **overrides))])
    order.refresh_from_db()
    return order


def test_registered_by_name_on_the_orders_alias_and_queue():
    spec = get_participant("orders.pay")
    assert (spec.alias, spec.queue, spec.try_, spec.confirm, spec.cancel) == (
        "orders", "orders", pay_try, pay_confirm, pay_cancel)
    assert isinstance(tcc.Branch("orders.pay", {}), tcc.Branch)


def test_try_holds_the_order_for_the_transaction(order):
    assert (run(pay_try, order).status, order.tcc_xid, order.pay_method) == ("PAYING", "X1", "bank")


@pytest.mark.parametrize("status", ["PAYING", "SUCCESS", "CLOSED", "FAILED"])
def test_try_refuses_an_order_that_is_not_created(order, status):
    Order.objects.filter(pk=order.pk).update(status=status)
    with pytest.raises(OrderNotPayable):
        run(pay_try, order)


@pytest.mark.parametrize("change", [{"amount": 1233}, {"currency": "USD"}])
def test_try_refuses_a_payment_that_does_not_match(order, change):
    with pytest.raises(OrderNotPayable):
        run(pay_try, order, **change)
    assert Order.objects.get(pk=order.pk).status == "CREATED"


def test_confirm_completes_records_and_publishes_in_one_transaction(order):
    run(pay_try, order)

    run(pay_confirm, order)

    assert (order.status, order.bank_trade_no, order.next_poll_at) == ("SUCCESS", "B1", None)
    record = PaymentRecord.objects.get()
    assert (record.bank_trade_no, record.outcome, record.order_id) == ("B1", "APPLIED", order.pk)
    [paid] = order_paid_payloads(order)
    assert (paid["fee"], paid["points_awarded"], paid["method"], paid["notify_url"]) == (7, 12, "bank", "https://shop.example/n")


def test_a_confirm_that_fails_after_publishing_publishes_nothing(order, monkeypatch):
    from orders import participants

    run(pay_try, order)
    monkeypatch.setattr(participants, "publish_many", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broker")))
    with pytest.raises(RuntimeError):
        run(pay_confirm, order)

    assert Order.objects.get(pk=order.pk).status == "PAYING"
    assert not PaymentRecord.objects.exists() and order_paid_payloads(order) == []


def test_balance_confirm_writes_no_bank_record(order):
    run(pay_try, order, method="balance", bank_trade_no="", paid_at="")
    run(pay_confirm, order, method="balance", bank_trade_no="", paid_at="")

    assert (order.status, order.pay_method, order.bank_trade_no) == ("SUCCESS", "balance", "")
    assert order.paid_at is not None
    assert not PaymentRecord.objects.exists()
    assert order_paid_payloads(order)[0]["bank_trade_no"] is None


def test_confirm_of_an_order_another_transaction_holds_raises_for_a_human(order):
    run(pay_try, order, xid="X1")
    with pytest.raises(OrderNotPayable):
        run(pay_confirm, order, xid="X2")
    assert Order.objects.get(pk=order.pk).status == "PAYING"


def test_cancel_releases_the_order(order):
    run(pay_try, order)
    assert (run(pay_cancel, order).status, order.tcc_xid, order.pay_method) == ("CREATED", "", "")


@pytest.mark.parametrize("status", ["SUCCESS", "CLOSED"])
def test_cancel_leaves_a_final_order_alone(order, status):
    Order.objects.filter(pk=order.pk).update(status=status, tcc_xid="X1")
    assert run(pay_cancel, order).status == status


def test_cancel_leaves_an_order_another_transaction_holds(order):
    run(pay_try, order, xid="X2")
    assert (run(pay_cancel, order, xid="X1").status, order.tcc_xid) == ("PAYING", "X2")
