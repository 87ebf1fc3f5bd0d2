import pytest

from orders.models import IllegalTransition, Order
from orders.services import order_create

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(merchant=merchant, merchant_order_no="T-1", amount=100, currency="CNY", subject="s", payer_id=payer.pk)
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
    [([], "SUCCESS"), (["CLOSED"], "PAYING"), (["PAYING", "SUCCESS"], "CREATED"), (["FAILED"], "SUCCESS"), (["PAYING"], "CLOSED")],
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
