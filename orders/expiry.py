"""Order expiry: close the CREATED orders past their expiry that the bank says were not paid."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orders.models import IllegalTransition, Order, PaymentRecord
from orders.polling import BANK_PASS_BUDGET_SECONDS, bank_payment_apply_found, bank_question_allowed
from paysys import bank

logger = logging.getLogger(__name__)


def orders_close_expired(
    *, now=None, limit: int = 100, budget_seconds: float = BANK_PASS_BUDGET_SECONDS
) -> int:
    """One expiry pass over CREATED orders past their expiry, oldest first. Returns orders closed.

    A payer may pay in the last minutes while the bank's notify is still on its way, so each
    order's bank is asked before closing: paid -> the payment is applied (SUCCESS), as polling
    does; no payment -> CLOSED; the bank cannot be asked -> the order stays CREATED for the next
    pass, until it expired more than ``ORDER_CLOSE_GRACE_SECONDS`` ago: then it is closed anyway
    and a payment arriving later is flagged for a human.
    """
    now = now or timezone.now()
    grace = timedelta(seconds=settings.ORDER_CLOSE_GRACE_SECONDS)
    with transaction.atomic(
        using="orders"
    ):  # skip orders another pass holds; hold nothing while asking
        expired = list(
            Order.objects.select_for_update(skip_locked=True)
            .filter(status=Order.Status.CREATED, expires_at__lt=now)
            .order_by("expires_at")[:limit]
        )
    deadline = time.monotonic() + budget_seconds
    closed = 0
    for order in expired:
        if not bank_question_allowed(deadline):  # asks within the polling bound, too
            logger.warning(
                "expiry pass spent its %s s budget (at most %s questions/s): the next pass takes over",
                budget_seconds,
                settings.ORDER_POLL_MAX_PER_SECOND,
            )
            break
        try:
            payment = bank.query_payment(order.out_trade_no)
        except bank.BankUnavailable as exc:
            if order.expires_at > now - grace:
                logger.warning(
                    "expired order %s stays CREATED until the bank answers: %s",
                    order.out_trade_no,
                    exc,
                )
                continue
            logger.warning(
                "closing %s without the bank's answer, expired over %s ago: %s",
                order.out_trade_no,
                grace,
                exc,
            )
        else:
            if payment is not None and payment["status"] == "SUCCESS":
                outcome = bank_payment_apply_found(payment)
                if outcome is None or outcome == PaymentRecord.Outcome.APPLIED:
                    continue
                # flagged (amount or currency mismatch): waits for a human, the order still expires
        closed += _order_close_if_created(order)
    return closed


def _order_close_if_created(order: Order) -> int:
    try:
        order.transition(Order.Status.CLOSED)
    except IllegalTransition:  # paid or closed meanwhile
        return 0
    return 1
