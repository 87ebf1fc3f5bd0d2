"""The bank simulator over HTTP: pay page, pay, test options, release, status query."""

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils.dateparse import parse_datetime

from paysys import bank
from paysys.sandbox import services
from paysys.sandbox.models import BankPayment
from tests.sandbox.conftest import pay, pay_path, sandbox_auth

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def enqueued(monkeypatch):
    """Records what the bank hands to Celery after commit, instead of a broker."""
    calls = []
    monkeypatch.setattr(
        services, "_enqueue", lambda task, *args, countdown=0: calls.append((task, args, countdown))
    )
    return calls


@pytest.fixture
def expired_order(make_order, settings):
    settings.ORDER_EXPIRY_SECONDS = -60
    return make_order()


def tampered(path: str) -> str:
    head, last = path[:-1], path[-1]
    return head + ("A" if last != "A" else "B")


def pay_to(path: str):
    return Client().post(path, {}, content_type="application/json")


# --- pay page ------------------------------------------------------------------------------


def test_pay_page_shows_the_order_and_a_pay_button(make_order):
    order = make_order(amount=1234, subject="Blue teapot")

    response = Client().get(pay_path(order))

    assert response.status_code == 200
    page = response.content.decode()
    assert order.out_trade_no in page
    assert "12.34 CNY" in page
    assert "Blue teapot" in page
    assert '<form method="post">' in page
    assert BankPayment.objects.count() == 0  # looking is not paying


def test_pay_page_of_a_paid_order_shows_the_payment_not_the_button(order):
    paid = pay(order).json()

    page = Client().get(pay_path(order)).content.decode()

    assert paid["bank_trade_no"] in page
    assert "<form" not in page


def test_pay_page_of_a_paid_order_says_already_paid_with_a_link_back_to_the_merchant(order):
    pay(order)

    page = (
        Client()
        .get(pay_path(order), headers={"Referer": "https://shop.example/checkout/42"})
        .content.decode()
    )

    assert 'id="already-paid"' in page and "already paid" in page
    assert "notifies the merchant's platform now" not in page
    assert '<a href="https://shop.example/checkout/42">Back to the merchant</a>' in page


def test_without_a_referer_the_paid_page_says_to_return_to_the_merchant(order):
    pay(order)

    page = Client().get(pay_path(order)).content.decode()

    assert "already paid" in page and "return to the merchant" in page and "<a href" not in page


def test_tampered_pay_link_is_a_404_page_and_cannot_pay(order):
    path = tampered(pay_path(order))

    page = Client().get(path)
    paid = pay_to(path)

    assert page.status_code == 404 and b"tampered" in page.content
    assert paid.status_code == 404
    assert paid.json()["error"]["code"] == "invalid_pay_token"
    assert BankPayment.objects.count() == 0


def test_expired_pay_link_says_so_and_refuses_to_pay(expired_order, enqueued):
    page = Client().get(pay_path(expired_order))
    response = pay(expired_order)

    assert page.status_code == 200
    assert b"expired" in page.content and b"<form" not in page.content
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "expired"
    assert BankPayment.objects.count() == 0
    assert enqueued == []


# --- pay ------------------------------------------------------------------------------------


def test_pay_takes_the_payment_from_the_link_and_enqueues_the_notify_after_commit(
    order, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(using="sandbox", execute=True):
        response = pay(order)

    assert response.status_code == 200
    data = response.json()
    payment = BankPayment.objects.get()
    assert data["bank_trade_no"] == payment.bank_trade_no and data["bank_trade_no"].startswith("B")
    assert {k: data[k] for k in ("out_trade_no", "amount", "currency", "status")} == {
        "out_trade_no": order.out_trade_no,
        "amount": 1234,
        "currency": "CNY",
        "status": "SUCCESS",
    }
    assert (payment.subject, payment.notify_state, payment.notify_attempts) == (
        "a book",
        "PENDING",
        0,
    )
    assert payment.next_attempt_at == payment.notify_from == payment.paid_at  # due at once
    assert enqueued == [("send_bank_notify", (payment.pk,), 0)]


def test_paying_twice_is_one_payment_with_one_bank_trade_no(
    order, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(using="sandbox", execute=True):
        first = pay(order)
        second = pay(order, {"duplicates": 3})

    assert first.status_code == second.status_code == 200
    assert first.json()["bank_trade_no"] == second.json()["bank_trade_no"]
    assert BankPayment.objects.count() == 1
    assert BankPayment.objects.get().duplicates == 0  # the replay's options change nothing
    assert len(enqueued) == 1


def test_a_paid_order_replays_its_payment_even_after_the_link_expired(order):
    first = pay(order).json()
    link_order = services.pay_token_read(pay_path(order).rsplit("/", 1)[1])

    payment, created = services.bank_pay(
        order=link_order, now=parse_datetime(first["paid_at"]) + timedelta(days=1)
    )

    assert (payment.bank_trade_no, created) == (first["bank_trade_no"], False)


def test_form_post_from_the_page_renders_the_paid_page(order):
    response = Client().post(pay_path(order), {}, headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    payment = BankPayment.objects.get()
    assert payment.bank_trade_no.encode() in response.content and b"Paid" in response.content


def test_bare_post_without_a_body_answers_json(order):
    response = Client().generic("POST", pay_path(order))

    assert response.status_code == 200
    assert response.json()["bank_trade_no"] == BankPayment.objects.get().bank_trade_no


# --- test options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"duplicates": -1}, "duplicates"),
        ({"duplicates": 11}, "duplicates"),
        ({"duplicates": "2"}, "duplicates"),
        ({"delay": True}, "delay"),
        ({"delay": 1.5}, "delay"),
        ({"hold": "yes"}, "hold"),
        ({"holdd": True}, "holdd"),
    ],
)
def test_bad_option_values_are_400_and_nothing_is_paid(order, body, field):
    response = pay(order, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert BankPayment.objects.count() == 0


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"hold"', b"\xff"])
def test_malformed_option_bodies_are_400_and_nothing_is_paid(order, raw):
    response = Client().post(pay_path(order), raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"malformed", "invalid"}
    assert BankPayment.objects.count() == 0


def test_delay_option_moves_the_first_notify_and_caps_the_countdown(
    make_order, enqueued, settings, django_capture_on_commit_callbacks
):
    short, long = make_order(), make_order()

    with django_capture_on_commit_callbacks(using="sandbox", execute=True):
        pay(short, {"delay": 30})
        pay(long, {"delay": 3600})

    for order, delay in ((short, 30), (long, 3600)):
        payment = BankPayment.objects.get(out_trade_no=order.out_trade_no)
        assert (
            payment.next_attempt_at
            == payment.notify_from
            == payment.paid_at + timedelta(seconds=delay)
        )
    assert [countdown for _, _, countdown in enqueued] == [30, settings.CELERY_MAX_COUNTDOWN]


def test_hold_option_keeps_the_notify_until_released(
    order, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(using="sandbox", execute=True):
        pay(order, {"hold": True, "duplicates": 2})

    payment = BankPayment.objects.get()
    assert (payment.notify_state, payment.next_attempt_at, payment.duplicates) == ("HELD", None, 2)
    assert enqueued == []
    assert services.notifies_resend_due(now=payment.paid_at + timedelta(days=1)) == 0


def test_release_frees_held_notifies_latest_payment_first(
    make_order, enqueued, django_capture_on_commit_callbacks
):
    orders = [make_order() for _ in range(3)]
    for order in orders:
        pay(order, {"hold": True})
    not_held = make_order()
    pay(not_held)

    with django_capture_on_commit_callbacks(using="sandbox", execute=True):
        response = Client().post("/sandbox/bank/release", headers=sandbox_auth())

    assert response.status_code == 200
    expected = [o.out_trade_no for o in reversed(orders)]
    assert response.json() == {"released": 3, "out_trade_nos": expected}
    ids = [BankPayment.objects.get(out_trade_no=n).pk for n in expected]
    assert enqueued == [("send_bank_notifies", (ids,), 0)]
    assert set(BankPayment.objects.filter(pk__in=ids).values_list("notify_state", flat=True)) == {
        "PENDING"
    }
    again = Client().post("/sandbox/bank/release", headers=sandbox_auth())
    assert again.json()["released"] == 0


# --- status query ---------------------------------------------------------------------------


def test_status_query_answers_the_payment_signed(order):
    paid = pay(order).json()

    response = Client().get(f"/sandbox/bank/payments/{order.out_trade_no}")

    assert response.status_code == 200
    assert bank.signature_valid(response.content, response.headers[bank.SIGNATURE_HEADER])
    data = json.loads(response.content)
    payment = BankPayment.objects.get()
    assert data == {
        "out_trade_no": order.out_trade_no,
        "bank_trade_no": paid["bank_trade_no"],
        "amount": 1234,
        "currency": "CNY",
        "status": "SUCCESS",
        "paid_at": payment.paid_at.isoformat(),
    }


def test_status_query_of_an_unpaid_order_is_a_signed_404(order):
    response = Client().get(f"/sandbox/bank/payments/{order.out_trade_no}")

    assert response.status_code == 404
    assert bank.signature_valid(response.content, response.headers[bank.SIGNATURE_HEADER])
    assert response.json()["status"] == "NOT_FOUND"
    assert response.json()["out_trade_no"] == order.out_trade_no


# --- the sandbox's own token guards its controls (issue 6) ------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}]
)
def test_release_needs_the_sandbox_token(make_order, headers):
    pay(make_order(), {"hold": True})

    response = Client().post("/sandbox/bank/release", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "sandbox_token_required"
    assert BankPayment.objects.get().notify_state == "HELD"


def test_test_options_need_the_sandbox_token_a_plain_pay_does_not(make_order):
    refused = pay(make_order(), {"hold": True}, Authorization="Bearer wrong")
    plain = Client().post(pay_path(make_order()), {}, content_type="application/json")

    assert refused.status_code == 401 and plain.status_code == 200
    assert list(BankPayment.objects.values_list("notify_state", flat=True)) == ["PENDING"]


def test_the_sandbox_token_is_not_a_platform_secret():
    assert settings.SANDBOX_TOKEN not in {settings.BANK_SHARED_SECRET, settings.SECRET_KEY}


@pytest.mark.parametrize(
    "raw",
    [b"[" * 30000 + b"]" * 30000, b'{"delay": 1e999}', b'{"delay": NaN}', b'{"hold": -Infinity}'],
)
def test_deep_nesting_and_infinities_are_400_not_500(order, raw):
    response = Client().post(
        pay_path(order), raw, content_type="application/json", headers=sandbox_auth()
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed"
    assert BankPayment.objects.count() == 0
