"""``POST /gateway/bank/notify``: verify, store the body, read it, store the notify once, publish,
acknowledge; refuse anything else (a signed body that cannot be read is kept, rejected)."""

import json

import pytest
from django.test import Client

from paysys import bank
from paysys.gateway.models import BankNotify, BankNotifyReceipt
from tests.gateway.conftest import published

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
    return BankNotify.objects.count(), published()


def receipts() -> list[tuple[str, bytes]]:
    return [(r.state, bytes(r.raw_body)) for r in BankNotifyReceipt.objects.order_by("pk")]


def test_valid_signed_notify_is_stored_published_and_acknowledged():
    raw = encode(notify_body())

    response = post(raw)

    assert response.status_code == 200
    assert response.json() == {
        "result": "success",
        "bank_trade_no": "B20261127100000AB12",
        "duplicate": False,
    }
    notify = BankNotify.objects.get()
    assert (notify.out_trade_no, notify.amount, notify.currency, notify.status) == (
        "PS20261127ABCDEF0123456789",
        1234,
        "CNY",
        "SUCCESS",
    )
    assert notify.raw_body == raw.decode() and notify.signature == bank.sign(raw)
    assert stored() == (1, 1)
    receipt = BankNotifyReceipt.objects.get()
    assert (receipt.state, bytes(receipt.raw_body), receipt.bank_notify, receipt.attempts) == (
        "PROCESSED",
        raw,
        notify,
        1,
    )


def test_invalid_signature_is_401_and_nothing_is_stored():
    raw = encode(notify_body())

    response = post(raw, signature=bank.sign(raw + b" "))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert stored() == (0, 0)
    assert receipts() == []  # only a correctly signed body is kept


def test_signature_of_another_body_is_401_and_nothing_is_stored():
    signed = encode(notify_body(amount=1))
    tampered = encode(notify_body(amount=100000))

    response = post(tampered, signature=bank.sign(signed))

    assert response.status_code == 401
    assert stored() == (0, 0)
    assert receipts() == []  # only a correctly signed body is kept


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_is_401_and_nothing_is_stored(signature):
    response = post(encode(notify_body()), signature=signature)

    assert response.status_code == 401
    assert stored() == (0, 0)
    assert receipts() == []  # only a correctly signed body is kept


def test_replayed_notify_is_acknowledged_both_times_and_stored_once():
    raw = encode(notify_body())

    first, replay = post(raw), post(raw)

    assert first.status_code == replay.status_code == 200
    assert (first.json()["duplicate"], replay.json()["duplicate"]) == (False, True)
    assert "flagged" not in replay.json()
    notify = BankNotify.objects.get()
    assert (notify.duplicates, notify.flag, notify.conflicting_body) == (1, "", "")
    assert stored() == (1, 1)  # the replay publishes nothing
    assert [(r.state, r.bank_notify_id) for r in BankNotifyReceipt.objects.all()] == [
        ("PROCESSED", notify.pk)
    ] * 2


def test_replay_stating_the_same_instant_in_another_offset_is_an_identical_duplicate():
    post(encode(notify_body(paid_at="2026-11-27T10:00:00+00:00")))

    replay = post(encode(notify_body(paid_at="2026-11-27T18:00:00+08:00")))

    assert replay.status_code == 200
    assert "flagged" not in replay.json()
    notify = BankNotify.objects.get()
    assert (notify.duplicates, notify.flag) == (1, "")


@pytest.mark.parametrize(
    "change,difference",
    [
        pytest.param(
            {"out_trade_no": "PSOTHER"},
            "out_trade_no PSOTHER != PS20261127ABCDEF0123456789",
            id="out_trade_no",
        ),
        pytest.param({"amount": 100}, "amount 100 != 1234", id="amount"),
        pytest.param({"currency": "USD"}, "currency USD != CNY", id="currency"),
        pytest.param(
            {"paid_at": "2026-11-27T10:00:01+00:00"},
            "paid_at 2026-11-27T10:00:01+00:00 != 2026-11-27T10:00:00+00:00",
            id="paid_at",
        ),
    ],
)
def test_conflicting_duplicate_is_acknowledged_but_flagged_and_keeps_the_first(
    caplog, change, difference
):
    first = encode(notify_body())
    conflicting = encode(notify_body(**change))
    post(first)

    with caplog.at_level("ERROR", logger="paysys.gateway"):
        response = post(conflicting)

    assert response.status_code == 200  # acknowledged: the bank must stop resending
    assert response.json() == {
        "result": "success",
        "bank_trade_no": "B20261127100000AB12",
        "duplicate": True,
        "flagged": True,
    }
    notify = BankNotify.objects.get()
    assert notify.flag == f"a later notify with the same bank_trade_no differed: {difference}"
    assert (notify.out_trade_no, notify.amount, notify.currency) == (
        "PS20261127ABCDEF0123456789",
        1234,
        "CNY",
    )
    assert notify.raw_body == first.decode() and notify.conflicting_body == conflicting.decode()
    assert notify.duplicates == 0  # counts identical replays only
    assert stored() == (1, 1)  # the conflicting notify publishes nothing
    assert [r.levelname for r in caplog.records if difference in r.getMessage()] == ["ERROR"]


def test_flag_names_every_differing_field():
    post(encode(notify_body()))

    post(encode(notify_body(amount=100, currency="USD")))

    assert BankNotify.objects.get().flag.endswith(": amount 100 != 1234, currency USD != CNY")


def test_flag_too_long_for_its_column_is_truncated_and_the_full_body_kept():
    post(encode(notify_body(out_trade_no="P" * 64)))
    conflicting = encode(
        notify_body(
            out_trade_no="Q" * 64, amount=10**15, currency="USD", paid_at="2027-01-01T00:00:00Z"
        )
    )

    response = post(conflicting)

    assert response.json()["flagged"] is True
    notify = BankNotify.objects.get()
    assert len(notify.flag) == 255 and notify.flag.endswith("…")
    assert notify.conflicting_body == conflicting.decode()


def test_latest_conflicting_notify_wins_and_an_identical_replay_keeps_the_flag():
    post(encode(notify_body()))
    post(encode(notify_body(amount=100)))
    latest = encode(notify_body(amount=200))
    post(latest)

    replay = post(encode(notify_body()))

    assert replay.json()["duplicate"] is True and "flagged" not in replay.json()
    notify = BankNotify.objects.get()
    assert notify.flag.endswith("amount 200 != 1234")
    assert notify.conflicting_body == latest.decode()
    assert (notify.amount, notify.duplicates) == (1234, 1)
    assert stored() == (1, 1)


def test_notifies_of_two_bank_trades_are_two_rows():
    post(encode(notify_body()))
    post(encode(notify_body(bank_trade_no="B2", out_trade_no="PS2")))

    assert stored() == (2, 2)


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\xff\xfe", b""])
def test_malformed_json_is_400_and_kept_rejected(raw):
    response = post(raw)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed"
    assert stored() == (0, 0)
    assert receipts() == [("REJECTED", raw)]
    assert BankNotifyReceipt.objects.get().error.startswith("malformed: body is not")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_signed_body_that_is_not_utf8_is_400_and_kept_rejected(encoding):
    raw = json.dumps(notify_body()).encode(encoding)  # json.loads would accept these bytes

    response = post(raw)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed"
    assert stored() == (0, 0)
    assert receipts() == [("REJECTED", raw)]  # the exact bytes that were signed


def test_utf8_body_with_a_byte_order_mark_is_accepted_and_stored_verbatim():
    raw = json.dumps(notify_body()).encode("utf-8-sig")

    response = post(raw)

    assert response.status_code == 200
    assert BankNotify.objects.get().raw_body.encode() == raw  # exactly the signed bytes
    assert stored() == (1, 1)


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
def test_wrong_shape_is_400_and_kept_rejected(body):
    response = post(encode(body))

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid", "malformed"}
    assert stored() == (0, 0)
    assert receipts() == [("REJECTED", encode(body))]
    error = response.json()["error"]
    assert BankNotifyReceipt.objects.get().error.startswith(f"{error['code']}: {error['message']}")


def test_a_rejected_field_is_named_in_the_answer_and_on_the_receipt():
    response = post(encode(notify_body(amount="100")))

    assert response.json()["error"] == {
        "code": "invalid",
        "message": "the request has invalid fields",
        "fields": {"amount": "must be a JSON integer"},
    }
    assert (
        BankNotifyReceipt.objects.get().error
        == "invalid: the request has invalid fields\namount: must be a JSON integer"
    )


def test_oversized_body_is_refused_with_4xx_not_500():
    raw = encode(notify_body(subject="x" * (65 * 1024)))

    response = post(raw)

    assert 400 <= response.status_code < 500
    assert response.status_code == 413
    assert stored() == (0, 0)
    assert receipts() == []  # only a correctly signed body is kept


def test_get_is_not_allowed_and_stores_nothing():
    response = Client().get(URL)

    assert response.status_code == 405
    assert stored() == (0, 0)
