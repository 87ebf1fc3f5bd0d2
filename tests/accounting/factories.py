"""Payloads and deliveries shaped exactly as the producers send them."""

from __future__ import annotations

import itertools

from paysys.core.money import fee_for
from tests.messaging.helpers import deliveries_for  # noqa: F401 - re-exported for the accounting tests

_numbers = itertools.count(1)


def order_paid_payload(*, amount: int = 1234, fee_rate_bp: int = 60, **overrides) -> dict:
    """An ``order.paid`` payload as orders publishes it (fee computed by orders, with fee_for)."""
    n = next(_numbers)
    payload = {
        "order_id": n,
        "out_trade_no": f"P{n:020d}",
        "merchant_id": 7,
        "merchant_order_no": f"M-{n}",
        "payer_id": 11,
        "amount": amount,
        "currency": "CNY",
        "fee": overrides.pop("fee") if "fee" in overrides else fee_for(amount, fee_rate_bp),
        "bank_trade_no": f"B{n:012d}",
        "paid_at": "2025-01-02T03:04:05+00:00",
    }
    payload.update(overrides)
    return payload
