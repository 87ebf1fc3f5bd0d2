import pytest
from django.db import connections, transaction

from orders.creation import order_create
from orders.models import IllegalTransition, Order

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="T-1",
        amount=100,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    return order


@pytest.mark.parametrize(
    "path",
    [["PAYING", "SUCCESS"], ["CLOSED"], ["FAILED"], ["PAYING", "CREATED", "PAYING", "FAILED"]],
)
def test_legal_paths(order, path):
    for status in path:
        order.transition(status)

    assert Order.objects.get(pk=order.pk).status == path[-1]


@pytest.mark.parametrize(
    "path,illegal",
    [
        ([], "SUCCESS"),
        (["CLOSED"], "PAYING"),
        (["PAYING", "SUCCESS"], "CREATED"),
        (["FAILED"], "SUCCESS"),
        (["PAYING"], "CLOSED"),
    ],
)
def test_illegal_transition_raises_and_changes_nothing(order, path, illegal):
    for status in path:
        order.transition(status)
    before = Order.objects.get(pk=order.pk).status

    with pytest.raises(IllegalTransition):
        order.transition(illegal)

    assert Order.objects.get(pk=order.pk).status == before


def test_stale_object_cannot_move_a_row_that_moved(order):
    stale = Order.objects.get(pk=order.pk)
    order.transition("CLOSED")

    with pytest.raises(IllegalTransition):
        stale.transition("PAYING")

    assert Order.objects.get(pk=order.pk).status == "CLOSED"


# --- transition_many: many orders, one UPDATE ------------------------------------------------


@pytest.fixture
def orders(merchant, payer):
    return [
        order_create(
            merchant=merchant,
            merchant_order_no=f"M-{n}",
            amount=100,
            currency="CNY",
            subject="s",
            payer_id=payer.pk,
        )[0]
        for n in range(3)
    ]


def test_transition_many_moves_each_order_with_its_own_values(orders, django_assert_num_queries):
    with django_assert_num_queries(1, connection=connections["orders"]):
        Order.transition_many(
            "PAYING",
            [(o, {"tcc_xid": f"X{n}", "pay_method": "bank"}) for n, o in enumerate(orders)],
        )

    rows = Order.objects.filter(pk__in=[o.pk for o in orders]).order_by("pk")
    assert [(r.status, r.tcc_xid, r.pay_method) for r in rows] == [
        ("PAYING", f"X{n}", "bank") for n in range(3)
    ]
    assert [(o.status, o.tcc_xid) for o in orders] == [("PAYING", f"X{n}") for n in range(3)]


def test_transition_many_checks_every_move_before_writing(orders):
    orders[1].transition("CLOSED")

    with pytest.raises(IllegalTransition, match="cannot move from CLOSED to PAYING"):
        Order.transition_many("PAYING", [(o, {}) for o in orders])

    assert list(Order.objects.order_by("pk").values_list("status", flat=True)) == [
        "CREATED",
        "CLOSED",
        "CREATED",
    ]


def test_transition_many_raises_when_a_row_moved_concurrently(orders):
    stale = Order.objects.get(pk=orders[2].pk)
    orders[2].transition("CLOSED")
    moves = [(orders[0], {}), (orders[1], {}), (stale, {})]

    with pytest.raises(IllegalTransition, match=r"changed concurrently \(2 of 3 moved\)$"):
        with transaction.atomic(using="orders"):
            Order.transition_many("PAYING", moves)

    assert list(Order.objects.order_by("pk").values_list("status", flat=True)) == [
        "CREATED",
        "CREATED",
        "CLOSED",
    ]


def test_transition_many_refuses_two_moves_of_one_order(order):
    with pytest.raises(ValueError):
        Order.transition_many("PAYING", [(order, {"tcc_xid": "X1"}), (order, {"tcc_xid": "X2"})])
    assert Order.objects.get(pk=order.pk).status == "CREATED"
