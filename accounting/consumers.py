"""What accounting learns from other services: only message payloads (DESIGN.md, "Dependency rules")."""

from accounting.services import voucher_book_order_paid
from paysys.contracts import OrderPaid
from paysys.messaging import consumer


@consumer(OrderPaid.TOPIC, queue="accounting")
def book_order_paid(message) -> None:
    """Runs in ``atomic(using="accounting")`` with the inbox row; a redelivery books nothing twice
    (the inbox drops it, and the voucher's unique source would too)."""
    voucher_book_order_paid(message.payload, message_id=message.message_id)
