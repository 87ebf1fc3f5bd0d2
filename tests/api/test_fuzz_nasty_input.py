"""No input anywhere gives a 5xx (issue 6): every operation of the published schema, plus the
endpoints outside it (bank gateway, sandbox pay), gets the inputs that used to be 500s: deep
nesting, infinities and NaN anywhere in a JSON body, unknown fields, bad cursors and bad base64.
Hypothesis then throws arbitrary bytes and text at the cursor.

schemathesis (tests/api/test_schema.py) checks the schema's own cases; this adds what a schema
cannot express.
"""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.sandbox.conftest import pay_path

pytestmark = pytest.mark.django_db(databases="__all__")

SERVICE_TOKEN = "fuzz-service-token-0123456789abcdef012345"

DEEP = b"[" * 30000 + b"]" * 30000
NASTY_BODIES = [
    DEEP,
    b'{"a": ' + DEEP + b"}",
    b'{"amount": 1e999}',
    b'{"payload": {"a": 1e999}}',
    b'{"payload": {"a": [-1e999]}}',
    b'{"payload": {"deep": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}}",
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b'{"x": -Infinity}',
    b'{"amount": 1' + b"0" * 5000 + b"}",  # beyond Python's int-from-text limit
    b'{"status": "SUCCESS", "fee": 0}',
    b'"\\ud800"',
    b"\xff\xfe{}",
    b"[]",
    b"null",
    b"",
]
NASTY_CURSORS = [
    "cD1hYmM=",
    "cD0tMQ==",
    "cD0xZTk5OQ==",
    "%%%",
    "\u00e9",
    "AAAA",
    "cj0y",
    "!!!",  # junk base64 skips: once read as an empty cursor, the first page
    "====",
    "eD0x",  # x=1: a key the API never writes
    "cj01",  # r=5
    "AAAA" * 3000,
    "bz05OTk5OTk5OTk5OTk5OQ==",
    # a position of 4,301 digits: more than int() converts (a 500 once)
    base64.b64encode(b"p=" + b"9" * 4301).decode(),
]


@pytest.fixture
def clients(merchant_and_key):
    merchant = APIClient()
    merchant.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
    service = APIClient()
    service.credentials(HTTP_AUTHORIZATION=f"Bearer {SERVICE_TOKEN}")
    return {"merchant": merchant, "service": service}


def operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the published schema, with the message API on."""
    from django.test import Client

    with override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN):
        schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    found = []
    for path, methods in schema["paths"].items():
        concrete = re.sub(
            r"\{message_id\}", str(uuid.uuid4()), re.sub(r"\{merchant_order_no\}", "M-1", path)
        )
        for method in methods:
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append((method.upper(), concrete))
    return found


OPERATIONS = operations()


def assert_json_4xx(response):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert "error" in response.json()


def client_for(clients, path):
    return clients["service" if path.startswith("/api/v1/messages") else "merchant"]


@override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN, MESSAGING_HTTP_TOPICS=["messaging.bench"])
@pytest.mark.parametrize("method, path", [op for op in OPERATIONS if op[0] != "GET"])
@pytest.mark.parametrize("raw", NASTY_BODIES, ids=lambda raw: raw[:24].decode("latin-1"))
def test_every_body_taking_operation_answers_nasty_json_with_a_4xx(clients, method, path, raw):
    response = client_for(clients, path).generic(method, path, raw, content_type="application/json")

    assert_json_4xx(response)


@override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN)
@pytest.mark.parametrize("method, path", [op for op in OPERATIONS if op[0] == "GET"])
@pytest.mark.parametrize("cursor", NASTY_CURSORS)
def test_every_read_answers_bad_cursors_with_a_json_4xx(clients, method, path, cursor):
    response = client_for(clients, path).get(path, {"cursor": cursor})

    # none is a cursor the API made: a 400 (a list) or the refusal of an unknown parameter
    # (a detail), never silently the first page
    assert_json_4xx(response)


@pytest.mark.parametrize("raw", NASTY_BODIES, ids=lambda raw: raw[:24].decode("latin-1"))
def test_the_gateway_and_the_sandbox_answer_nasty_json_with_a_4xx(raw, make_merchant, payer):
    from orders.creation import order_create
    from paysys import bank

    merchant, _ = make_merchant()
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no=f"F-{uuid.uuid4().hex[:8]}",
        amount=5,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    client = APIClient()
    gateway = client.generic(
        "POST",
        "/gateway/bank/notify",
        raw,
        content_type="application/json",
        HTTP_X_BANK_SIGNATURE=bank.sign(raw),
    )
    sandbox = client.generic(
        "POST",
        pay_path(order),
        raw or b"{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {_sandbox_token()}",
    )

    assert_json_4xx(gateway)
    if raw not in (b"", b"{}", b"null"):
        assert_json_4xx(sandbox)


def _sandbox_token() -> str:
    from django.conf import settings

    return settings.SANDBOX_TOKEN


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    cursor=st.one_of(
        st.text(max_size=60), st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    )
)
def test_any_cursor_is_a_page_or_a_4xx_never_a_5xx(api, cursor):
    response = api.get("/api/v1/orders", {"cursor": cursor})

    assert response.status_code < 500, (cursor, response.content[:300])


# --- security round 3, item 6: inputs that were still 500s --------------------------------------


@pytest.mark.parametrize("position", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+12:00"])
def test_a_notifications_cursor_whose_time_has_no_utc_equivalent_is_a_400(api, position):
    from urllib.parse import urlencode

    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()

    response = api.get("/api/v1/notifications", {"cursor": cursor})

    assert response.status_code == 400, response.content[:300]
    assert "cursor" in response.json()["error"]["fields"]


@override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN, MESSAGING_HTTP_TOPICS=["messaging.bench"])
@pytest.mark.parametrize("method, path", [op for op in OPERATIONS if op[0] != "GET"])
@pytest.mark.parametrize(
    "charset", ["rot13", "zlib", "hex", "no-such-charset", "punycode", "utf-7", "idna", "latin-1"]
)
def test_a_json_body_in_a_charset_that_is_not_a_text_encoding_is_a_400(
    clients, method, path, charset
):
    response = client_for(clients, path).generic(
        method, path, b'{"a": 1}', content_type=f"application/json; charset={charset}"
    )

    assert_json_4xx(
        response
    )  # a 400 wherever the body is read; a confirm or discard ignores its body


def test_a_punycode_body_is_refused_before_it_is_decoded(api):
    """Python's punycode decoder takes time quadratic in the input: 64 KB of it held a web thread
    0.4 s. Only UTF-8 is decoded: the charset is refused before the body is read."""
    body = b"-" + b"b" * 65000

    response = api.generic(
        "POST", "/api/v1/orders", body, content_type="application/json; charset=punycode"
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"].endswith("unsupported charset: send UTF-8 JSON")


@override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN, MESSAGING_HTTP_TOPICS=["messaging.bench"])
@pytest.mark.parametrize("method, path", [op for op in OPERATIONS if op[0] != "GET"])
def test_a_body_with_a_duplicate_key_is_a_4xx_never_read_one_way(clients, method, path):
    response = client_for(clients, path).generic(
        method, path, b'{"amount": 100, "amount": 200}', content_type="application/json"
    )

    assert_json_4xx(response)


def test_an_order_body_with_a_duplicate_amount_is_a_400_and_creates_nothing(api, payer):
    from orders.models import Order

    body = (
        '{"merchant_order_no": "DUP-1", "amount": 100, "amount": 200, "currency": "CNY", "subject": "s", '
        f'"payer_id": {payer.pk}}}'
    ).encode()

    response = api.generic("POST", "/api/v1/orders", body, content_type="application/json")

    assert response.status_code == 400 and "appears twice" in response.json()["error"]["message"]
    assert not Order.objects.filter(merchant_order_no="DUP-1").exists()


def test_a_signed_bank_notify_with_a_duplicate_key_is_refused_and_kept_as_rejected():
    from paysys import bank
    from paysys.gateway.models import BankNotify

    body = b'{"bank_trade_no": "B-DUP", "out_trade_no": "X", "amount": 1, "amount": 2, "currency": "CNY"}'

    response = APIClient().generic(
        "POST",
        "/gateway/bank/notify",
        body,
        content_type="application/json",
        HTTP_X_BANK_SIGNATURE=bank.sign(body),
    )

    assert_json_4xx(response)
    assert not BankNotify.objects.filter(bank_trade_no="B-DUP").exists()


def test_an_absurdly_long_integer_is_refused_without_python_internals(api):
    response = api.generic(
        "POST",
        "/api/v1/orders",
        b'{"amount": 1' + b"0" * 5000 + b"}",
        content_type="application/json",
    )

    assert response.status_code == 400
    assert (
        "set_int_max_str_digits" not in response.content.decode()
        and "out of range" in response.content.decode()
    )
