"""The bank simulator refuses an order the platform says is paid already (e.g. from the payer's
wallet): its pay page says so with no button, its pay call answers 409, and nothing is paid twice.
It asks the platform over HTTP (``GET /gateway/bank/orders/<out_trade_no>``, signed both ways)."""

import json

import pytest
from django.test import Client

from orders.models import Order
from paysys import bank
from paysys.sandbox.models import BankPayment
from tests.sandbox.conftest import pay, pay_path
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def platform(live_server, settings):
    """The platform's order-status endpoint, served over HTTP for the bank to ask."""
    settings.BANK_ORDER_STATUS_URL = live_server.url + "/gateway/bank/orders/"
    return live_server


def paid_another_way(order) -> None:
    force_status(
        Order.objects.filter(pk=order.pk), status=Order.Status.SUCCESS, pay_method="balance"
    )


def test_the_pay_page_of_an_order_paid_from_the_wallet_says_already_paid_with_no_button(
    order, platform
):
    paid_another_way(order)

    response = Client().get(pay_path(order))

    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="already-paid"' in page and "paid another way" in page and "<form" not in page


def test_the_pay_call_for_an_order_paid_from_the_wallet_is_refused_and_pays_nothing(
    order, platform
):
    paid_another_way(order)

    response = pay(order)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_paid"
    assert not BankPayment.objects.filter(out_trade_no=order.out_trade_no).exists()


def test_the_page_button_of_an_order_paid_meanwhile_says_already_paid(order, platform):
    page = Client().get(pay_path(order)).content.decode()
    assert "<form" in page  # payable when the page was opened
    paid_another_way(order)

    response = Client().post(pay_path(order), {}, headers={"Accept": "text/html"})

    assert response.status_code == 409 and 'id="already-paid"' in response.content.decode()
    assert not BankPayment.objects.filter(out_trade_no=order.out_trade_no).exists()


def test_a_closed_order_is_refused_too(order, platform):
    force_status(Order.objects.filter(pk=order.pk), status=Order.Status.CLOSED)

    response = pay(order)

    assert response.status_code == 409 and response.json()["error"]["code"] == "order_closed"


def test_a_payable_order_is_paid_once_as_before(order, platform):
    first, second = pay(order), pay(order)

    assert first.status_code == second.status_code == 200
    assert first.json()["bank_trade_no"] == second.json()["bank_trade_no"]


def test_without_an_answer_from_the_platform_the_bank_takes_the_payment(order, settings):
    settings.BANK_ORDER_STATUS_URL = "http://127.0.0.1:9/gateway/bank/orders/"  # nothing listens

    assert pay(order).status_code == 200


# --- the platform's side ---------------------------------------------------------------------------


def test_the_platform_answers_only_a_signed_question_and_signs_its_answer(order):
    url = f"/gateway/bank/orders/{order.out_trade_no}"

    assert Client().get(url).status_code == 401
    assert (
        Client().get(url, headers={bank.SIGNATURE_HEADER: bank.sign(b"another")}).status_code == 401
    )

    response = Client().get(
        url, headers={bank.SIGNATURE_HEADER: bank.sign(order.out_trade_no.encode())}
    )
    assert response.status_code == 200
    assert bank.signature_valid(response.content, response[bank.SIGNATURE_HEADER])
    assert json.loads(response.content) == {
        "out_trade_no": order.out_trade_no,
        "status": "CREATED",
        "payable": True,
    }
