"""What notifications learns of orders: only the order.paid payload (docs/architecture.md, "Dependency rules")."""

from notifications.services import notification_create_for_order_paid
from paysys.contracts import OrderPaid
from paysys.messaging import consumer


@consumer(OrderPaid.TOPIC, queue="notifications")
def notify_order_paid(message) -> None:
    """Runs in ``atomic(using="notifications")`` with the inbox row: a redelivered message is a
    no-op, and the record's unique (order, event type) makes a second event for the order one too."""
    notification_create_for_order_paid(OrderPaid.from_payload(message.payload), message_id=message.message_id)
