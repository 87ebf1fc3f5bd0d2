"""Payloads and deliveries shaped exactly as the producers send them."""

from __future__ import annotations

import itertools

from paysys.contracts import OrderPaid, WalletCredited
from paysys.core.money import fee_for
from tests.messaging.helpers import deliveries_for  # noqa: F401 - re-exported for the accounting tests

_numbers = itertools.count(1)


def order_paid_payload(*, amount: int = 1234, fee_rate_bp: int = 60, **overrides) -> dict:
    """An ``order.paid`` payload as orders publishes it (the contract's ``to_payload``, fee from
    fee_for); ``overrides`` may break the contract on purpose (a key set to ``...`` is removed)."""
    n = next(_numbers)
    event = OrderPaid(
        order_id=n,
        out_trade_no=f"P{n:020d}",
        merchant_id=7,
        merchant_order_no=f"M-{n}",
        payer_id=11,
        amount=amount,
        currency="CNY",
        fee=fee_for(amount, fee_rate_bp) if type(amount) is int else 0,
        bank_trade_no=f"B{n:012d}",
        paid_at="2025-01-02T03:04:05+00:00",
    )
    payload = event.to_payload()
    payload.update({k: v for k, v in overrides.items() if v is not ...})
    for key in [k for k, v in overrides.items() if v is ...]:
        payload.pop(key, None)
    return payload


def wallet_credited_payload(*, amount: int = 10_000, **overrides) -> dict:
    """A ``wallet.credited`` payload as funds publishes it."""
    n = next(_numbers)
    payload = {
        "v": WalletCredited.VERSION,
        "entry_id": n,
        "payer_id": 11,
        "amount": amount,
        "currency": "CNY",
        "reason": f"top-up {n}",
        "credited_by": "command:ops",
        "credited_at": "2025-01-02T03:04:05+00:00",
    }
    payload.update(overrides)
    return payload
