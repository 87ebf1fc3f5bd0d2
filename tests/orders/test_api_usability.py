"""What a merchant new to the API runs into: fetching by the platform's number, the notify URL
that applies, error messages that say what to send."""

import pytest

from tests.orders.test_api import order_body

pytestmark = pytest.mark.django_db(databases="__all__")


def test_an_order_is_found_by_its_out_trade_no(api, payer):
    created = api.post("/api/v1/orders", order_body(payer), format="json").json()
    api.post("/api/v1/orders", order_body(payer, merchant_order_no="M-other"), format="json")

    page = api.get(f"/api/v1/orders?out_trade_no={created['out_trade_no']}").json()

    assert [o["merchant_order_no"] for o in page["results"]] == ["M-1001"]
    assert api.get("/api/v1/orders?out_trade_no=PS-nope").json()["results"] == []


def test_another_merchants_out_trade_no_finds_nothing(api, payer, make_merchant):
    created = api.post("/api/v1/orders", order_body(payer), format="json").json()
    _, other_key = make_merchant()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")

    assert api.get(f"/api/v1/orders?out_trade_no={created['out_trade_no']}").json()["results"] == []
    response = api.get(f"/api/v1/orders/{created['out_trade_no']}")
    assert response.status_code == 404 and "out_trade_no" not in response.json()["error"]["message"]


def test_an_out_trade_no_in_the_detail_path_is_a_404_that_points_to_the_query(api, payer):
    created = api.post("/api/v1/orders", order_body(payer), format="json").json()

    response = api.get(f"/api/v1/orders/{created['out_trade_no']}")

    assert response.status_code == 404
    assert (
        f"GET /api/v1/orders?out_trade_no={created['out_trade_no']}"
        in response.json()["error"]["message"]
    )


def test_notify_url_shows_the_merchants_default_when_the_order_has_none(api, payer, merchant):
    created = api.post("/api/v1/orders", order_body(payer), format="json").json()
    own = api.post(
        "/api/v1/orders",
        order_body(payer, merchant_order_no="M-own", notify_url="https://m.example/n"),
        format="json",
    ).json()

    assert created["notify_url"] == merchant.notify_url != ""
    assert own["notify_url"] == "https://m.example/n"
    assert api.get("/api/v1/orders/M-1001").json()["notify_url"] == merchant.notify_url
    assert {o["notify_url"] for o in api.get("/api/v1/orders").json()["results"]} == {
        merchant.notify_url,
        "https://m.example/n",
    }
    # and the replay of the first create (no notify_url) is still identical, not a conflict
    assert api.post("/api/v1/orders", order_body(payer), format="json").status_code == 200


def test_no_authorization_header_says_to_send_a_bearer_key(anon_api):
    response = anon_api.get("/api/v1/orders")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert "Authorization: Bearer <api_key>" in response.json()["error"]["message"]
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "amount,hint",
    [
        ("19.99", "send 1999 for 19.99"),
        (19.99, "send 1999 for 19.99"),
        # a whole number in the wrong JSON type: the amount itself is most likely right
        ("20", 'send 20, not "20" (or 2000 if you meant 20.00)'),
        (1999.0, "send 1999, not 1999.0"),
    ],
)
def test_a_decimal_amount_is_told_to_use_minor_units(api, payer, amount, hint):
    response = api.post("/api/v1/orders", order_body(payer, amount=amount), format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert (
        "integers in minor units" in error["fields"]["amount"] and hint in error["fields"]["amount"]
    )


def test_a_non_number_amount_still_says_minor_units(api, payer):
    response = api.post("/api/v1/orders", order_body(payer, amount="lots"), format="json")

    assert "integers in minor units" in response.json()["error"]["fields"]["amount"]


def test_an_unknown_payer_uses_the_invalid_code_like_other_field_errors(api):
    response = api.post(
        "/api/v1/orders",
        {
            "merchant_order_no": "M-1",
            "amount": 100,
            "currency": "CNY",
            "subject": "s",
            "payer_id": 987654321,
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["fields"] == {"payer_id": "no such payer"}
