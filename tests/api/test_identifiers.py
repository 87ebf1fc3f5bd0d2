"""Identifiers compare exactly on every backend (MariaDB's default collations ignore case)."""

import pytest

from orders.models import Order

pytestmark = pytest.mark.django_db(databases="__all__")


def test_merchant_order_numbers_differing_in_case_are_different_orders(api, payer):
    body = {"amount": 100, "currency": "CNY", "subject": "s", "payer_id": payer.pk}

    lower = api.post("/api/v1/orders", {**body, "merchant_order_no": "abc"}, format="json")
    upper = api.post("/api/v1/orders", {**body, "merchant_order_no": "ABC", "amount": 200}, format="json")

    assert (lower.status_code, upper.status_code) == (201, 201)
    assert Order.objects.count() == 2
    assert api.get("/api/v1/orders/ABC").json()["amount"] == 200
    assert api.get("/api/v1/orders/abc").json()["amount"] == 100
    assert api.get("/api/v1/orders/Abc").status_code == 404
