"""What accounting learns from other services: only message payloads (docs/architecture.md, "Dependency rules")."""

import logging

from accounting.services import voucher_book_order_paid, voucher_book_wallet_credited
from paysys.contracts import OrderPaid, WalletCredited
from paysys.core.steps import log_steps
from paysys.messaging import consumer

logger = logging.getLogger(__name__)


@consumer(OrderPaid.TOPIC, queue="accounting")
def book_order_paid(message) -> None:
    """Runs in ``atomic(using="accounting")`` with the inbox row; a redelivery books nothing twice
    (the inbox drops it, and the voucher's unique source would too)."""
    voucher, created = voucher_book_order_paid(message.payload, message_id=message.message_id)
    if created:
        log_steps(logger, "order %s: voucher booked (%s)", [(message.payload.get("out_trade_no"), voucher.source)],
                  using="accounting")


@consumer(WalletCredited.TOPIC, queue="accounting")
def book_wallet_credited(message) -> None:
    voucher_book_wallet_credited(message.payload, message_id=message.message_id)
