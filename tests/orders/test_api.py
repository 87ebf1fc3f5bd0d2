import json
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from orders.expiry import orders_close_expired
from orders.models import Order, PaymentRecord
from paysys import bank as bank_protocol
from paysys.contracts import OrderPaid
from paysys.core import netguard
from paysys.messaging.models import Message
from tests.api.helpers import fresh_window
from tests.concurrency import run_at_once
from tests.orders.conftest import pay_with_notify_held
from tests.phase_two import run_phase_two
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__")


def order_body(payer, **overrides):
    body = {
        "merchant_order_no": "M-1001",
        "amount": 1234,
        "currency": "CNY",
        "subject": "a book",
        "payer_id": payer.pk,
    }
    body.update(overrides)
    return body


# --- create: idempotency ------------------------------------------------------------------


def test_create_returns_201_with_status_and_pay_url(api, payer, merchant):
    response = api.post("/api/v1/orders", order_body(payer), format="json")

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "CREATED"
    assert data["amount"] == 1234
    assert "/sandbox/bank/pay/" in data["pay_url"]
    order = Order.objects.get(merchant_id=merchant.pk, merchant_order_no="M-1001")
    assert order.out_trade_no == data["out_trade_no"]
    assert order.expires_at > timezone.now()


def test_the_pay_url_is_the_same_on_every_read(api, payer, monkeypatch):
    import django.core.signing

    created = api.post("/api/v1/orders", order_body(payer), format="json").json()
    later = django.core.signing.time.time() + 3600
    monkeypatch.setattr(django.core.signing.time, "time", lambda: later)  # signed an hour later

    replay = api.post("/api/v1/orders", order_body(payer), format="json").json()
    fetched = api.get("/api/v1/orders/M-1001").json()
    listed = api.get("/api/v1/orders").json()["results"][0]

    assert created["pay_url"] == replay["pay_url"] == fetched["pay_url"] == listed["pay_url"]
    token = created["pay_url"].rsplit("/", 1)[1]
    assert bank_protocol.read_pay_token(token)["out_trade_no"] == created["out_trade_no"]


def test_identical_replay_returns_200_and_the_same_order(api, payer):
    first = api.post("/api/v1/orders", order_body(payer), format="json")
    replay = api.post("/api/v1/orders", order_body(payer), format="json")

    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["out_trade_no"] == first.json()["out_trade_no"]
    assert Order.objects.count() == 1


def test_conflicting_replay_returns_409_and_changes_nothing(api, payer):
    api.post("/api/v1/orders", order_body(payer), format="json")

    response = api.post("/api/v1/orders", order_body(payer, amount=9999), format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert "amount" in response.json()["error"]["fields"]
    assert list(Order.objects.values_list("amount", flat=True)) == [1234]


def test_same_merchant_order_no_for_two_merchants_is_two_orders(api, payer, make_merchant):
    _, other_key = make_merchant()
    api.post("/api/v1/orders", order_body(payer), format="json")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")

    response = api.post("/api/v1/orders", order_body(payer, amount=1), format="json")

    assert response.status_code == 201
    assert Order.objects.count() == 2


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_concurrent_identical_creates_make_one_order(merchant_and_key, payer):
    from rest_framework.test import APIClient

    def create():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
        return client.post("/api/v1/orders", order_body(payer), format="json").status_code

    statuses = run_at_once(*[create] * 6)

    assert sorted(statuses) == [200] * 5 + [201]
    assert Order.objects.count() == 1


# --- create: validation -------------------------------------------------------------------

INVALID = [
    ("merchant_order_no", ""),
    ("merchant_order_no", "x" * 65),
    ("merchant_order_no", "has space"),
    ("merchant_order_no", "semi;colon"),
    ("merchant_order_no", "ünïcode"),
    (
        "merchant_order_no",
        " M-1",
    ),  # never trimmed: what the schema's pattern says is what is accepted
    ("merchant_order_no", "M-1\n"),
    ("merchant_order_no", 12345),
    ("amount", 0),
    ("amount", -1),
    ("amount", 100_000_000_001),
    ("amount", 12.5),
    ("amount", 100.0),
    ("amount", "100"),
    ("amount", True),
    ("amount", None),
    ("currency", "USD"),
    ("currency", "cny"),
    ("currency", "CNYX"),
    ("currency", 156),
    ("subject", ""),
    ("subject", "   "),
    ("subject", "s" * 129),
    ("subject", "\ud800"),
    ("subject", "nul\x00byte"),
    ("payer_id", 0),
    ("payer_id", "1"),
    ("payer_id", 2**63),
    ("payer_id", 999_999_999),
    ("notify_url", "ftp://example.com/x"),
    ("notify_url", "not a url"),
    ("notify_url", "http://" + "a" * 600 + ".com"),
]


@pytest.mark.parametrize("field,value", INVALID)
def test_invalid_field_is_400_naming_the_field_and_writes_nothing(api, payer, field, value):
    # json.dumps escapes to ASCII, so even a lone surrogate travels as the client sent it
    body = json.dumps(order_body(payer, **{field: value}))
    response = api.generic("POST", "/api/v1/orders", body, content_type="application/json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["fields"].keys() == {field}
    assert Order.objects.count() == 0


@pytest.mark.parametrize("field", ["merchant_order_no", "amount", "subject", "payer_id"])
def test_missing_required_field_is_400(api, payer, field):
    body = order_body(payer)
    del body[field]

    response = api.post("/api/v1/orders", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Order.objects.count() == 0


def test_boundaries_are_accepted(api, payer):
    response = api.post(
        "/api/v1/orders",
        order_body(
            payer,
            merchant_order_no="A" * 64,
            amount=100_000_000_000,
            subject="s" * 128,
            notify_url="https://m.example/n",
        ),
        format="json",
    )
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"", "application/json"),
        (b"merchant_order_no=x", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/json"),
    ],
)
def test_malformed_bodies_get_a_json_4xx(api, body, content_type):
    response = api.generic("POST", "/api/v1/orders", body, content_type=content_type)

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert Order.objects.count() == 0


def test_oversized_body_is_refused(api, payer):
    response = api.post("/api/v1/orders", order_body(payer, subject="x" * 100_000), format="json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert Order.objects.count() == 0


# --- auth and tenancy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer ",
        "Bearer psk_nope",
        "Basic abc",
        "bearer psk_000000000000_x",
        "Bearer psk_000000000000_wrong",
    ],
)
def test_missing_or_wrong_key_is_401(anon_api, payer, header):
    if header is not None:
        anon_api.credentials(HTTP_AUTHORIZATION=header)

    responses = [
        anon_api.post("/api/v1/orders", order_body(payer), format="json"),
        anon_api.get("/api/v1/orders"),
        anon_api.get("/api/v1/orders/M-1001"),
    ]

    assert [r.status_code for r in responses] == [401, 401, 401]
    assert all(
        r.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
        for r in responses
    )
    assert Order.objects.count() == 0


def test_right_prefix_wrong_secret_is_401(anon_api, merchant_and_key, payer):
    _, key = merchant_and_key
    anon_api.credentials(HTTP_AUTHORIZATION=f"Bearer {key[:-3]}abc")

    assert anon_api.get("/api/v1/orders").status_code == 401


def test_frozen_merchant_is_401(api, merchant):
    merchant.status = "frozen"
    merchant.save()

    assert api.get("/api/v1/orders").status_code == 401


def test_another_merchants_order_is_404(api, payer, make_merchant):
    api.post("/api/v1/orders", order_body(payer), format="json")
    _, other_key = make_merchant()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")

    response = api.get("/api/v1/orders/M-1001")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/orders").json()["results"] == []


def test_get_own_order(api, payer):
    api.post("/api/v1/orders", order_body(payer), format="json")

    response = api.get("/api/v1/orders/M-1001")

    assert response.status_code == 200
    assert response.json()["merchant_order_no"] == "M-1001"


# --- list ---------------------------------------------------------------------------------


def test_list_is_paginated_newest_first_and_filters(api, payer):
    for i in range(5):
        api.post("/api/v1/orders", order_body(payer, merchant_order_no=f"M-{i}"), format="json")
    force_status(Order.objects.filter(merchant_order_no="M-0"), status=Order.Status.CLOSED)

    page = api.get("/api/v1/orders?limit=2").json()
    closed = api.get("/api/v1/orders?status=CLOSED").json()
    future = api.get(
        "/api/v1/orders", {"created_after": (timezone.now() + timedelta(hours=1)).isoformat()}
    ).json()

    assert [o["merchant_order_no"] for o in page["results"]] == ["M-4", "M-3"]
    second = api.get(page["next"]).json()
    assert [o["merchant_order_no"] for o in second["results"]] == ["M-2", "M-1"]
    # the bare cursor, for a client that does not parse URLs: the same page as the link
    assert api.get("/api/v1/orders", {"limit": 2, "cursor": page["next_cursor"]}).json() == second
    assert parse_qs(urlsplit(page["next"]).query)["cursor"] == [page["next_cursor"]]
    assert page["previous"] is page["previous_cursor"] is None
    back = api.get("/api/v1/orders", {"limit": 2, "cursor": second["previous_cursor"]}).json()
    assert [o["merchant_order_no"] for o in back["results"]] == ["M-4", "M-3"]
    assert [o["merchant_order_no"] for o in closed["results"]] == ["M-0"]
    assert future["results"] == []


@pytest.mark.parametrize(
    "query",
    ["status=NOPE", "created_after=yesterday", "created_before=2020-13-45", "cursor=garbage"],
)
def test_bad_list_filters_are_4xx(api, query):
    response = api.get(f"/api/v1/orders?{query}")

    assert 400 <= response.status_code < 500
    assert "error" in response.json()


# --- throttling ---------------------------------------------------------------------------


def test_throttled_per_api_key(api, settings, make_merchant):
    settings.API_RATE_LIMIT = "3/min"
    fresh_window(60, needed=5)
    _, other_key = make_merchant()

    statuses = [api.get("/api/v1/orders").status_code for _ in range(4)]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    other = api.get("/api/v1/orders").status_code

    assert statuses == [200, 200, 200, 429]
    assert other == 200


# --- expiry -------------------------------------------------------------------------------


def expire(*merchant_order_nos, ago=timedelta(minutes=1)):
    Order.objects.filter(merchant_order_no__in=merchant_order_nos).update(
        expires_at=timezone.now() - ago
    )


def statuses():
    return dict(Order.objects.values_list("merchant_order_no", "status"))


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_expired_orders_are_closed_unless_the_bank_says_they_were_paid(api, payer, bank):
    created = {
        no: api.post(
            "/api/v1/orders", order_body(payer, merchant_order_no=no), format="json"
        ).json()
        for no in ("OLD", "NEW", "PAID", "LATE")
    }
    bank_trade_no = pay_with_notify_held(
        created["LATE"]["pay_url"]
    )  # paid in the last minute, notify delayed
    expire("OLD", "PAID", "LATE")
    force_status(Order.objects.filter(merchant_order_no="PAID"), status=Order.Status.SUCCESS)

    closed = orders_close_expired()
    run_phase_two()  # phase two of the found payment's TCC (the participants' workers' part)

    assert closed == 1
    assert statuses() == {"OLD": "CLOSED", "NEW": "CREATED", "PAID": "SUCCESS", "LATE": "SUCCESS"}
    record = PaymentRecord.objects.get()
    assert (record.bank_trade_no, record.outcome, record.source) == (
        bank_trade_no,
        "APPLIED",
        "poll",
    )
    assert Message.objects.using("orders").filter(topic=OrderPaid.TOPIC).exists()
    assert orders_close_expired() == 0


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_expired_orders_wait_for_an_unreachable_bank_until_the_grace_period_ends(
    api, payer, settings
):
    settings.BANK_QUERY_URL = "http://127.0.0.1:9/sandbox/bank/payments/"  # connection refused
    settings.ORDER_CLOSE_GRACE_SECONDS = 600
    for no in ("JUST", "LONG-AGO"):
        api.post("/api/v1/orders", order_body(payer, merchant_order_no=no), format="json")
    expire("JUST", ago=timedelta(minutes=1))
    expire("LONG-AGO", ago=timedelta(minutes=11))

    closed = orders_close_expired()

    assert closed == 1
    assert statuses() == {
        "JUST": "CREATED",
        "LONG-AGO": "CLOSED",
    }  # JUST: its notify may still come


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_an_expired_order_whose_payment_is_flagged_is_closed(api, payer, monkeypatch):
    order_no = api.post(
        "/api/v1/orders", order_body(payer, merchant_order_no="ODD"), format="json"
    ).json()["out_trade_no"]
    expire("ODD")
    wrong_amount = {
        "bank_trade_no": "B-ODD",
        "out_trade_no": order_no,
        "amount": 1,
        "currency": "CNY",
        "status": "SUCCESS",
        "paid_at": "2026-11-27T10:00:00+00:00",
    }
    monkeypatch.setattr(bank_protocol, "query_payment", lambda out_trade_no: wrong_amount)

    assert orders_close_expired() == 1

    assert statuses() == {"ODD": "CLOSED"}
    assert (
        PaymentRecord.objects.get().outcome == "FLAGGED"
    )  # for a human, as any payment it cannot apply


# --- issue 6: hardening -------------------------------------------------------------------


def test_unknown_body_fields_are_a_400_naming_them_and_nothing_is_created(api, payer):
    response = api.post("/api/v1/orders", order_body(payer, status="SUCCESS", fee=0), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"fee": "unknown field", "status": "unknown field"}
    assert not Order.objects.exists()


def test_a_body_of_thousands_of_unknown_fields_gets_a_short_400_naming_the_first(api, payer):
    body = order_body(payer, **{f"k{i:05d}": i for i in range(3000)}, **{"a" * 2000: 1})

    response = api.post("/api/v1/orders", body, format="json")

    assert response.status_code == 400 and len(response.content) < 2000
    fields = response.json()["error"]["fields"]
    assert list(fields)[:2] == ["a" * 100, "k00000"] and len(fields) == 21  # names cut short
    assert fields["..."] == "and 2981 more unknown fields"
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/notify",
        "http://127.0.0.1:8000/admin/",
        "http://[::1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_a_notify_url_into_the_platforms_network_is_refused_at_creation(api, payer, settings, url):
    settings.NOTIFY_ALLOWED_NETWORKS = []  # production: no private network allowed

    response = api.post("/api/v1/orders", order_body(payer, notify_url=url), format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert "notify_url" in error["fields"] and "not an allowed target" in error["message"]
    assert not Order.objects.exists()


def test_a_notify_url_whose_name_server_stalls_holds_the_request_at_most_the_lookup_limit(
    api, payer, settings, monkeypatch
):
    """Whoever runs a name's DNS server decides how long its lookup takes: the request waits at
    most netguard.LOOKUP_SECONDS, the stalled lookups hold only the guard's own threads, and the
    name is taken as not resolving yet (the guard checks the address again at send time)."""
    settings.NOTIFY_ALLOWED_NETWORKS = []
    monkeypatch.setattr(netguard, "LOOKUP_SECONDS", 0.3)
    released = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: released.wait(10) and [])
    took = []
    try:
        for i in range(6):  # more than the guard has threads: the later ones wait in its queue
            began = time.monotonic()
            response = api.post(
                "/api/v1/orders",
                order_body(
                    payer, merchant_order_no=f"SLOW-{i}", notify_url="https://slow.example/n"
                ),
                format="json",
            )
            took.append(time.monotonic() - began)
            assert response.status_code == 201, response.content
    finally:
        released.set()

    assert max(took) < 2, took
    assert Order.objects.filter(notify_url="https://slow.example/n").count() == 6


def test_a_public_notify_url_is_accepted(api, payer, settings):
    settings.NOTIFY_ALLOWED_NETWORKS = []

    response = api.post(
        "/api/v1/orders",
        order_body(payer, notify_url="https://93.184.215.14/notify"),
        format="json",
    )

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "cursor",
    [
        "cD1hYmM%3D",  # "p=abc": a position that is not an id (was a 500)
        "cD0xZTk5OQ%3D%3D",  # "p=1e999"
        "cD05OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ%3D%3D",  # an id beyond any column
        "garbage",
        "%FF%FE",
        "%C3%A9t%C3%A9",
        "cj1ub3Q%3D",
        "bz0tMQ%3D%3D",
        "",
    ],
)
def test_a_bad_cursor_is_a_400_naming_it(api, payer, cursor):
    response = api.get(f"/api/v1/orders?cursor={cursor}")

    assert response.status_code == 400, response.content
    assert "cursor" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 30000 + b"]" * 30000,
        b'{"amount": 1e999}',
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
    ],
)
def test_deep_nesting_and_infinities_are_400_not_500(api, raw):
    response = api.generic("POST", "/api/v1/orders", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_open_unpaid_orders_per_merchant_are_capped_429(api, payer, settings, make_merchant):
    settings.ORDER_MAX_OPEN_PER_MERCHANT = 3
    for i in range(3):
        assert (
            api.post(
                "/api/v1/orders", order_body(payer, merchant_order_no=f"CAP-{i}"), format="json"
            ).status_code
            == 201
        )

    refused = api.post(
        "/api/v1/orders", order_body(payer, merchant_order_no="CAP-3"), format="json"
    )
    replay = api.post("/api/v1/orders", order_body(payer, merchant_order_no="CAP-0"), format="json")
    force_status(Order.objects.filter(merchant_order_no="CAP-0"), status=Order.Status.CLOSED)
    after_one_closed = api.post(
        "/api/v1/orders", order_body(payer, merchant_order_no="CAP-4"), format="json"
    )

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_open_orders"
    assert replay.status_code == 200  # a replay creates nothing: never refused
    assert after_one_closed.status_code == 201
    _, other_key = make_merchant()  # the cap is per merchant
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    assert (
        api.post(
            "/api/v1/orders", order_body(payer, merchant_order_no="CAP-0"), format="json"
        ).status_code
        == 201
    )


# --- identifiers compare exactly on every backend (MariaDB's default collations ignore case) ----


def test_merchant_order_numbers_differing_in_case_are_different_orders(api, payer):
    body = {"amount": 100, "currency": "CNY", "subject": "s", "payer_id": payer.pk}

    lower = api.post("/api/v1/orders", {**body, "merchant_order_no": "abc"}, format="json")
    upper = api.post(
        "/api/v1/orders", {**body, "merchant_order_no": "ABC", "amount": 200}, format="json"
    )

    assert (lower.status_code, upper.status_code) == (201, 201)
    assert Order.objects.count() == 2
    assert api.get("/api/v1/orders/ABC").json()["amount"] == 200
    assert api.get("/api/v1/orders/abc").json()["amount"] == 100
    assert api.get("/api/v1/orders/Abc").status_code == 404
