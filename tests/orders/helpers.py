"""Helpers for the orders tests."""

from __future__ import annotations

from orders.models import Order
from paysys.messaging.models import Message


def order_paid_payloads(order: Order) -> list[dict]:
    """The ``order.paid`` events orders published for ``order``: one per message (the outbox
    holds a row per consumer of the topic)."""
    rows = Message.objects.using("orders").filter(topic="order.paid").order_by("id")
    by_message = {
        row.message_id: row.payload
        for row in rows
        if row.payload["out_trade_no"] == order.out_trade_no
    }
    return list(by_message.values())
