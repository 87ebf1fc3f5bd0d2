"""``orders.pay``, the orders participant, called as the framework calls it: inside
``atomic(using="orders")`` (the barrier, which the framework adds, is tested in tests/tcc)."""

import pytest
from django.db import connections, transaction
from django.utils import timezone

from orders.creation import order_create
from orders.models import Order, OrderNotPayable, PaymentRecord
from orders.participants import pay_cancel, pay_confirm, pay_try
from paysys import tcc
from paysys.contracts import OrderPaid
from paysys.core.errors import NotFound
from paysys.messaging.models import Message
from paysys.tcc.registry import BranchOp, get_participant
from paysys.tcc.registry import is_many as tcc_is_many
from tests.orders.helpers import order_paid_payloads
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__")
op_name = {pay_try: "try", pay_confirm: "confirm", pay_cancel: "cancel"}


@pytest.fixture
def order(merchant, payer):
    return order_create(
        merchant=merchant,
        merchant_order_no="P-1",
        amount=1234,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]


def payload(order, **overrides):
    return {
        "out_trade_no": order.out_trade_no,
        "currency": "CNY",
        "amount": 1234,
        "method": "bank",
        "bank_trade_no": "B1",
        "paid_at": "2026-11-27T10:00:00+00:00",
        "source": "notify",
        "fee": 7,
        "points": 12,
        "notify_url": "https://shop.example/n",
        **overrides,
    }


def run(op, order, xid="X1", **overrides):
    """One branch's op, as the framework calls it (a batched op with one op)."""
    with transaction.atomic(using="orders"):
        get_participant("orders.pay").apply(
            op_name[op], [BranchOp(xid, payload(order, **overrides))]
        )
    order.refresh_from_db()
    return order


def test_registered_by_name_on_the_orders_alias_and_queue():
    spec = get_participant("orders.pay")
    assert (spec.alias, spec.queue, spec.try_, spec.confirm, spec.cancel) == (
        "orders",
        "orders",
        pay_try,
        pay_confirm,
        pay_cancel,
    )
    assert isinstance(tcc.Branch("orders.pay", {}), tcc.Branch)


def test_try_holds_the_order_for_the_transaction(order):
    assert (run(pay_try, order).status, order.tcc_xid, order.pay_method) == ("PAYING", "X1", "bank")


@pytest.mark.parametrize("status", ["PAYING", "SUCCESS", "CLOSED", "FAILED"])
def test_try_refuses_an_order_that_is_not_created(order, status):
    force_status(Order.objects.filter(pk=order.pk), status=status)
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
    assert (paid["fee"], paid["points_awarded"], paid["method"], paid["notify_url"]) == (
        7,
        12,
        "bank",
        "https://shop.example/n",
    )


def test_a_confirm_that_fails_after_publishing_publishes_nothing(order, monkeypatch):
    from orders import participants

    run(pay_try, order)
    monkeypatch.setattr(
        participants, "publish_many", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broker"))
    )
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
    force_status(Order.objects.filter(pk=order.pk), status=status, tcc_xid="X1")
    assert run(pay_cancel, order).status == status


def test_cancel_leaves_an_order_another_transaction_holds(order):
    run(pay_try, order, xid="X2")
    assert (run(pay_cancel, order, xid="X1").status, order.tcc_xid) == ("PAYING", "X2")


# --- batches: many branches in one call (the framework's contract, paysys/tcc/registry.py) ---


@pytest.fixture
def make_orders(merchant, payer):
    def make(n, prefix="B"):
        return [
            order_create(
                merchant=merchant,
                merchant_order_no=f"{prefix}-{i}",
                amount=1234,
                currency="CNY",
                subject="s",
                payer_id=payer.pk,
            )[0]
            for i in range(n)
        ]

    return make


def branch_ops(orders, **overrides):
    """One op per order: xid X<i>, bank trade number B<i>, fee i, points 10 + i; every other
    order pays from the balance (no bank trade number)."""
    return [
        BranchOp(
            f"X{i}",
            payload(
                order,
                **(
                    {"method": "bank", "bank_trade_no": f"B{i}"}
                    if i % 2 == 0
                    else {"method": "balance", "bank_trade_no": "", "paid_at": ""}
                ),
                fee=i,
                points=10 + i,
                **overrides,
            ),
        )
        for i, order in enumerate(orders)
    ]


def apply(op, ops):
    with transaction.atomic(using="orders"):
        get_participant("orders.pay").apply(op, ops)


def reloaded(orders):
    return list(Order.objects.filter(pk__in=[o.pk for o in orders]).order_by("pk"))


def test_try_and_confirm_are_batched():
    spec = get_participant("orders.pay")
    assert (tcc_is_many(spec.try_), tcc_is_many(spec.confirm), tcc_is_many(spec.cancel)) == (
        True,
        True,
        False,
    )


def test_a_batch_try_holds_each_order_for_its_own_transaction(make_orders):
    orders = make_orders(5)

    apply("try", branch_ops(orders))

    assert [(o.status, o.tcc_xid, o.pay_method) for o in reloaded(orders)] == [
        ("PAYING", f"X{i}", "bank" if i % 2 == 0 else "balance") for i in range(5)
    ]


def test_a_batch_with_one_order_not_payable_applies_nothing_and_alone_that_op_gets_the_single_error(
    make_orders,
):
    orders = make_orders(4)
    force_status(Order.objects.filter(pk=orders[2].pk), status="SUCCESS")
    ops = branch_ops(orders)

    with pytest.raises(OrderNotPayable):
        apply("try", ops)
    assert [o.status for o in reloaded(orders)] == ["CREATED", "CREATED", "SUCCESS", "CREATED"]

    # the framework's redo: each op alone
    with pytest.raises(OrderNotPayable) as refused:
        apply("try", [ops[2]])
    assert (refused.value.message, refused.value.code) == (
        "order is SUCCESS, not payable",
        "order_success",
    )
    for op in ops[:2] + ops[3:]:
        apply("try", [op])
    assert [o.status for o in reloaded(orders)] == ["PAYING", "PAYING", "SUCCESS", "PAYING"]


def test_a_batch_with_a_mismatched_payment_or_a_missing_order_applies_nothing(make_orders):
    orders = make_orders(3)
    ops = branch_ops(orders)
    mismatched = ops[:2] + [BranchOp("X2", {**ops[2].payload, "amount": 1})]
    missing = ops[:2] + [BranchOp("X2", {**ops[2].payload, "out_trade_no": "NOPE"})]

    with pytest.raises(OrderNotPayable, match="^paying 1 CNY, order is 1234 CNY$"):
        apply("try", mismatched)
    with pytest.raises(NotFound, match="^no order NOPE$"):
        apply("try", missing)

    assert {o.status for o in reloaded(orders)} == {"CREATED"}


def test_two_tries_of_one_order_in_a_batch_raise_and_alone_the_second_is_refused(order):
    first, second = BranchOp("X1", payload(order)), BranchOp("X2", payload(order, method="balance"))

    with pytest.raises(ValueError):
        apply("try", [first, second])

    apply("try", [first])
    with pytest.raises(OrderNotPayable, match="^order is PAYING, not payable$"):
        apply("try", [second])
    order.refresh_from_db()
    assert (order.status, order.tcc_xid) == ("PAYING", "X1")


def test_a_batch_confirm_completes_records_and_publishes_each_order(make_orders):
    orders = make_orders(4)
    ops = branch_ops(orders)
    apply("try", ops)

    apply("confirm", ops)

    rows = reloaded(orders)
    assert [(o.status, o.bank_trade_no, o.next_poll_at) for o in rows] == [
        ("SUCCESS", "B0", None),
        ("SUCCESS", "", None),
        ("SUCCESS", "B2", None),
        ("SUCCESS", "", None),
    ]
    assert all(o.paid_at is not None for o in rows)
    records = PaymentRecord.objects.order_by("bank_trade_no")
    assert [
        (r.bank_trade_no, r.outcome, r.order_id, r.out_trade_no, r.amount, r.source)
        for r in records
    ] == [(f"B{i}", "APPLIED", rows[i].pk, rows[i].out_trade_no, 1234, "notify") for i in (0, 2)]
    for i, order in enumerate(rows):
        [paid] = order_paid_payloads(order)
        assert (
            paid
            == OrderPaid(
                order_id=order.pk,
                out_trade_no=order.out_trade_no,
                merchant_id=order.merchant_id,
                merchant_order_no=order.merchant_order_no,
                payer_id=order.payer_id,
                amount=1234,
                currency="CNY",
                fee=i,
                bank_trade_no=order.bank_trade_no or None,
                paid_at=order.paid_at.isoformat(),
                notify_url="https://shop.example/n",
                method=order.pay_method,
                points_awarded=10 + i,
            ).to_payload()
        )


def test_a_batch_confirm_of_an_order_another_transaction_holds_applies_nothing(make_orders):
    orders = make_orders(3)
    ops = branch_ops(orders)
    apply("try", ops)
    ops[1] = BranchOp("X9", ops[1].payload)

    with pytest.raises(OrderNotPayable, match=r"^confirm of X9: order \w+ is PAYING held by 'X1'$"):
        apply("confirm", ops)

    assert {o.status for o in reloaded(orders)} == {"PAYING"}
    assert (
        not PaymentRecord.objects.exists()
        and not Message.objects.using("orders").filter(topic="order.paid").exists()
    )


def test_confirm_applies_a_bank_payment_recorded_flagged_before(order):
    PaymentRecord.objects.create(
        bank_trade_no="B1",
        out_trade_no="OTHER",
        amount=1,
        currency="USD",
        paid_at=timezone.now(),
        source="poll",
        outcome="FLAGGED",
        reason="unknown order",
    )
    run(pay_try, order)

    run(pay_confirm, order)

    record = PaymentRecord.objects.get()
    assert (
        record.outcome,
        record.reason,
        record.order_id,
        record.out_trade_no,
        record.amount,
        record.currency,
        record.source,
        record.paid_at,
    ) == ("APPLIED", "", order.pk, order.out_trade_no, 1234, "CNY", "notify", order.paid_at)


def test_a_batch_of_twenty_runs_in_a_constant_number_of_queries(
    make_orders, django_assert_max_num_queries
):
    """Set-based: pk lookup, lock, UPDATE, upsert, outbox INSERT, whatever the batch's size."""
    ops = branch_ops(make_orders(20))
    orders_db = connections["orders"]

    with transaction.atomic(using="orders"):
        with django_assert_max_num_queries(3, connection=orders_db):  # pk lookup, lock, UPDATE
            get_participant("orders.pay").apply("try", ops)
    with transaction.atomic(using="orders"):
        with django_assert_max_num_queries(
            5, connection=orders_db
        ):  # pk lookup, lock, UPDATE, upsert, outbox
            get_participant("orders.pay").apply("confirm", ops)

    assert Order.objects.filter(status="SUCCESS").count() == 20


def test_a_batch_locks_its_orders_by_primary_key(make_orders, django_assert_max_num_queries):
    """By pk, not through the out_trade_no index, whose walk order depends on the plan."""
    if not connections["orders"].features.has_select_for_update:
        pytest.skip("this database takes no row locks")
    orders = make_orders(3)
    ops = branch_ops(orders)[::-1]

    with transaction.atomic(using="orders"):
        with django_assert_max_num_queries(3, connection=connections["orders"]) as queries:
            get_participant("orders.pay").apply("try", ops)

    [lock] = [q["sql"] for q in queries.captured_queries if "FOR UPDATE" in q["sql"]]
    assert "out_trade_no" not in lock.split("WHERE")[1] and "ORDER BY" in lock
