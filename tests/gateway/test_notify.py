"""``POST /gateway/bank/notify``: verify, store once, publish, acknowledge; refuse anything else."""

import json

import pytest
from django.test import Client

from paysys import bank
from paysys.gateway.models import BankNotify
from paysys.messaging.models import Message

pytestmark = pytest.mark.django_db(databases="__all__")

URL = "/gateway/bank/notify"


def notify_body(**overrides) -> dict:
    body = {
        "bank_trade_no": "B20261127100000AB12",
        "out_trade_no": "PS20261127ABCDEF0123456789",
        "amount": 1234,
        "currency": "CNY",
        "status": "SUCCESS",
        "paid_at": "2026-11-27T10:00:00+00:00",
    }
    body.update(overrides)
    return body


def post(raw: bytes, signature: str | None = "sign"):
    """POST raw bytes; signature "sign" means a valid signature of exactly these bytes."""
    headers = {}
    if signature == "sign":
        headers[bank.SIGNATURE_HEADER] = bank.sign(raw)
    elif signature is not None:
        headers[bank.SIGNATURE_HEADER] = signature
    return Client().post(URL, raw, content_type="application/json", headers=headers)


def encode(body) -> bytes:
    return json.dumps(body).encode()


def stored() -> tuple[int, int]:
    """(notifies stored, bank.payment_succeeded messages published)."""
    return BankNotify.objects.count(), Message.objects.using("default").filter(topic="bank.payment_succeeded").count()


def test_valid_signed_notify_is_stored_published_and_acknowledged():
    raw = encode(notify_body())

    response = post(raw)

    assert response.status_code == 200
    assert response.json() == {"result": "success", "bank_trade_no": "B20261127100000AB12", "duplicate": False}
    notify = BankNotify.objects.get()
    assert (notify.out_trade_no, notify.amount, notify.currency, notify.status) == ("PS20261127ABCDEF0123456789", 1234, "CNY", "SUCCESS")
    assert notify.raw_body == raw.decode() and notify.signature == bank.sign(raw)
    assert stored() == (1, 1)


def test_invalid_signature_is_401_and_nothing_is_stored():
    raw = encode(notify_body())

    response = post(raw, signature=bank.sign(raw + b" "))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert stored() == (0, 0)


def test_signature_of_another_body_is_401_and_nothing_is_stored():
    signed = encode(notify_body(amount=1))
    tampered = encode(notify_body(amount=100000))

    response = post(tampered, signature=bank.sign(signed))

    assert response.status_code == 401
    assert stored() == (0, 0)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_is_401_and_nothing_is_stored(signature):
    response = post(encode(notify_body()), signature=signature)

    assert response.status_code == 401
    assert stored() == (0, 0)


def test_replayed_notify_is_acknowledged_both_times_and_stored_once():
    raw = encode(notify_body())

    first, replay = post(raw), post(raw)

    assert first.status_code == replay.status_code == 200
    assert (first.json()["duplicate"], replay.json()["duplicate"]) == (False, True)
    assert BankNotify.objects.get().duplicates == 1
    assert stored() == (1, 1)  # the replay publishes nothing


def test_notifies_of_two_bank_trades_are_two_rows():
    post(encode(notify_body()))
    post(encode(notify_body(bank_trade_no="B2", out_trade_no="PS2")))

    assert stored() == (2, 2)


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b""])
def test_malformed_json_is_400_and_nothing_is_stored(raw):
    response = post(raw)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed"
    assert stored() == (0, 0)


def _without(field: str) -> dict:
    body = notify_body()
    del body[field]
    return body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_without("bank_trade_no"), id="missing-bank_trade_no"),
        pytest.param(_without("amount"), id="missing-amount"),
        pytest.param(_without("paid_at"), id="missing-paid_at"),
        pytest.param(notify_body(amount="100"), id="amount-string"),
        pytest.param(notify_body(amount=100.0), id="amount-float"),
        pytest.param(notify_body(amount=True), id="amount-bool"),
        pytest.param(notify_body(amount=-100), id="amount-negative"),
        pytest.param(notify_body(amount=0), id="amount-zero"),
        pytest.param(notify_body(status="FAILED"), id="status-not-success"),
        pytest.param(notify_body(currency="CNYX"), id="currency-too-long"),
        pytest.param(notify_body(bank_trade_no=""), id="bank_trade_no-empty"),
        pytest.param(notify_body(bank_trade_no=12345), id="bank_trade_no-number"),
        pytest.param(notify_body(paid_at="yesterday"), id="paid_at-not-a-date"),
        pytest.param([notify_body()], id="json-array"),
        pytest.param("SUCCESS", id="json-string"),
        pytest.param(None, id="json-null"),
    ],
)
def test_wrong_shape_is_400_and_nothing_is_stored(body):
    response = post(encode(body))

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid", "malformed"}
    assert stored() == (0, 0)


def test_oversized_body_is_refused_with_4xx_not_500():
    raw = encode(notify_body(subject="x" * (65 * 1024)))

    response = post(raw)

    assert 400 <= response.status_code < 500
    assert response.status_code == 413
    assert stored() == (0, 0)


def test_get_is_not_allowed_and_stores_nothing():
    response = Client().get(URL)

    assert response.status_code == 405
    assert stored() == (0, 0)
