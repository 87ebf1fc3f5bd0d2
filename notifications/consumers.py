"""What notifications learns of orders: only the order.paid payload (docs/architecture.md, "Dependency rules")."""

from notifications.services import (
    notification_create_for_order_paid,
    notification_create_for_refund,
    notifications_create_for_orders_paid,
)
from paysys.contracts import OrderPaid, RefundFinished
from paysys.messaging import consumer


@consumer(OrderPaid.TOPIC, queue="notifications", batch=True)
def notify_order_paid(deliveries) -> None:
    """Runs in ``atomic(using="notifications")`` with the inbox rows, a relay batch at once: a
    redelivered message is a no-op, and the record's unique (order, event type) makes a second
    event for the order one too (the batch fails, and each delivery goes again alone)."""
    events = [(OrderPaid.from_payload(d.payload), d.message_id) for d in deliveries]
    if len(events) == 1:
        notification_create_for_order_paid(events[0][0], message_id=events[0][1])
    else:
        notifications_create_for_orders_paid(events)


@consumer(RefundFinished.TOPIC, queue="notifications", name="notifications.notify_refund")
def notify_refund(message) -> None:
    """``refund.succeeded`` / ``refund.failed`` to the merchant: once per refund."""
    event = RefundFinished.from_payload(message.payload)
    if (
        event.kind == "order"
    ):  # a duplicate payment's refund is the platform's business with the payer
        notification_create_for_refund(event, message_id=message.message_id)
