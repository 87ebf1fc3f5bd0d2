"""What accounting learns from other services: only message payloads (docs/architecture.md, "Dependency rules")."""

import logging

from accounting.services import (
    voucher_book_order_paid,
    voucher_book_refund,
    voucher_book_wallet_credited,
    vouchers_book_order_paid,
)
from paysys.contracts import OrderPaid, RefundFinished, WalletCredited
from paysys.core.steps import log_steps
from paysys.messaging import consumer

logger = logging.getLogger(__name__)


@consumer(OrderPaid.TOPIC, queue="accounting", batch=True)
def book_order_paid(deliveries) -> None:
    """Runs in ``atomic(using="accounting")`` with the inbox rows, a relay batch at once (one
    INSERT for the vouchers, one for their lines); a redelivery books nothing twice (the inbox
    drops it, and the voucher's unique source would too). If the batch fails, the framework hands
    each delivery again alone, and the one-voucher path tells a duplicate source apart."""
    if len(deliveries) == 1:
        voucher, created = voucher_book_order_paid(
            deliveries[0].payload, message_id=deliveries[0].message_id
        )
        vouchers = [voucher] if created else []
    else:
        vouchers = vouchers_book_order_paid([(d.payload, d.message_id) for d in deliveries])
    log_steps(
        logger,
        "order %s: voucher booked (%s)",
        [(voucher.source.split(":", 1)[1], voucher.source) for voucher in vouchers],
        using="accounting",
    )


@consumer(WalletCredited.TOPIC, queue="accounting")
def book_wallet_credited(message) -> None:
    voucher_book_wallet_credited(message.payload, message_id=message.message_id)


@consumer(RefundFinished.TOPIC, queue="accounting", name="accounting.book_refund")
def book_refund(message) -> None:
    """A SUCCEEDED refund's voucher, once (the inbox, and the voucher's unique source)."""
    voucher_book_refund(message.payload, message_id=message.message_id)
