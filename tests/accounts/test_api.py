"""GET /api/v1/balance and /api/v1/balance/entries: a merchant sees its own money only."""

import base64

import pytest
from rest_framework.test import APIClient

from tests.accounts.helpers import fund_payload, new_xid, phase

pytestmark = pytest.mark.django_db(databases="__all__")


def credit_merchant(merchant_id, amount, out_trade_no, confirm=True):
    xid = new_xid()
    payload = fund_payload(
        "merchant", merchant_id, amount, out_trade_no=out_trade_no, reason="order paid"
    )
    phase("funds.credit", "try", payload, xid)
    if confirm:
        phase("funds.credit", "confirm", payload, xid)


def test_a_merchant_without_an_account_sees_zeros(api):
    response = api.get("/api/v1/balance")

    assert response.status_code == 200
    assert response.json() == {"currency": "CNY", "available": 0, "frozen": 0, "pending_in": 0}


def test_balance_shows_available_frozen_and_pending_in(api, merchant):
    credit_merchant(merchant.pk, 9940, "P1")
    credit_merchant(merchant.pk, 500, "P2", confirm=False)

    response = api.get("/api/v1/balance", {"currency": "CNY"})

    assert response.status_code == 200
    assert response.json() == {"currency": "CNY", "available": 9940, "frozen": 0, "pending_in": 500}


def test_another_merchant_sees_its_own_zeros_and_no_entries(merchant, make_merchant):
    credit_merchant(merchant.pk, 9940, "P1")
    _, other_key = make_merchant()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")

    assert other.get("/api/v1/balance").json()["available"] == 0
    assert other.get("/api/v1/balance/entries").json()["results"] == []


def test_entries_are_the_balance_history_newest_first(api, merchant):
    credit_merchant(merchant.pk, 100, "P1")
    credit_merchant(merchant.pk, 200, "P2")
    credit_merchant(merchant.pk, 999, "P3", confirm=False)  # a hold: not in the history

    response = api.get("/api/v1/balance/entries")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [
        (e["amount"], e["direction"], e["balance_after"], e["out_trade_no"]) for e in results
    ] == [
        (200, "credit", 300, "P2"),
        (100, "credit", 100, "P1"),
    ]
    assert set(results[0]) == {
        "amount",
        "direction",
        "balance_after",
        "out_trade_no",
        "reason",
        "created_at",
    }


def test_entries_paginate_with_a_cursor(api, merchant):
    for n in range(5):
        credit_merchant(merchant.pk, 10 + n, f"P{n}")

    first = api.get("/api/v1/balance/entries", {"limit": 2}).json()
    second = api.get(first["next"]).json()

    assert [e["amount"] for e in first["results"]] == [14, 13]
    assert [e["amount"] for e in second["results"]] == [12, 11]


@pytest.mark.parametrize(
    "path,params,field",
    [
        ("/api/v1/balance", {"currency": "USD"}, "currency"),
        ("/api/v1/balance", {"curency": "CNY"}, "curency"),
        ("/api/v1/balance", {"currency": ""}, "currency"),
        ("/api/v1/balance/entries", {"limit": 0}, "limit"),
        ("/api/v1/balance/entries", {"limit": "many"}, "limit"),
        ("/api/v1/balance/entries", {"page": 2}, "page"),
    ],
)
def test_bad_query_parameters_are_400(api, path, params, field):
    response = api.get(path, params)

    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "invalid" and field in body["fields"]


@pytest.mark.parametrize("position", ["not-a-number", "-1", "99999999999999999999999"])
def test_a_forged_cursor_is_400_not_500(api, position):
    cursor = base64.b64encode(f"p={position}".encode()).decode()

    response = api.get("/api/v1/balance/entries", {"cursor": cursor})

    assert response.status_code == 400
    assert "cursor" in response.json()["error"]["fields"]


@pytest.mark.parametrize("path", ["/api/v1/balance", "/api/v1/balance/entries"])
def test_the_api_key_is_required(anon_api, path):
    response = anon_api.get(path)

    assert response.status_code == 401
