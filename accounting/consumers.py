"""What accounting learns from other services: only message payloads (docs/architecture.md, "Dependency rules")."""

from accounting.services import voucher_book_order_paid, voucher_book_wallet_credited
from paysys.contracts import OrderPaid, WalletCredited
from paysys.messaging import consumer


@consumer(OrderPaid.TOPIC, queue="accounting")
def book_order_paid(message) -> None:
    """Runs in ``atomic(using="accounting")`` with the inbox row; a redelivery books nothing twice
    (the inbox drops it, and the voucher's unique source would too)."""
    voucher_book_order_paid(message.payload, message_id=message.message_id)


@consumer(WalletCredited.TOPIC, queue="accounting")
def book_wallet_credited(message) -> None:
    voucher_book_wallet_credited(message.payload, message_id=message.message_id)
