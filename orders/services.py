from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from paysys import bank
from paysys.core.errors import Conflict, InvalidInput
from paysys.contracts import OrderPaid
from paysys.core.models import Merchant, Payer
from paysys.core.money import fee_for
from paysys.messaging import publish
from orders.models import IllegalTransition, Order, PaymentRecord

logger = logging.getLogger(__name__)

# one polling or expiry pass stops asking the bank after this long; the next pass goes on
BANK_PASS_BUDGET_SECONDS = 20

# fields that must match for a replayed create to be "the same order"
IDEMPOTENT_FIELDS = ("amount", "currency", "subject", "payer_id", "notify_url")


def new_out_trade_no() -> str:
    return "PS" + timezone.now().strftime("%Y%m%d") + secrets.token_hex(8).upper()


def order_create(
    *,
    merchant: Merchant,
    merchant_order_no: str,
    amount: int,
    currency: str,
    subject: str,
    payer_id: int,
    notify_url: str = "",
) -> tuple[Order, bool]:
    """Create the merchant's order, idempotently on (merchant, merchant_order_no).

    Returns ``(order, created)``. A replay with identical fields returns the existing order;
    a replay with different fields raises Conflict and changes nothing.
    """
    if currency not in settings.ORDER_CURRENCIES:
        raise InvalidInput("unsupported currency", fields={"currency": f"one of {', '.join(settings.ORDER_CURRENCIES)}"})
    wanted = {"amount": amount, "currency": currency, "subject": subject, "payer_id": payer_id, "notify_url": notify_url or ""}
    existing = Order.objects.filter(merchant_id=merchant.pk, merchant_order_no=merchant_order_no).first()
    if existing is None:
        if not Payer.objects.filter(pk=payer_id).exists():
            raise InvalidInput("unknown payer", fields={"payer_id": "no such payer"})
        try:
            with transaction.atomic(using="orders"):
                order = Order.objects.create(
                    out_trade_no=new_out_trade_no(),
                    merchant_id=merchant.pk,
                    merchant_order_no=merchant_order_no,
                    expires_at=timezone.now() + timedelta(seconds=settings.ORDER_EXPIRY_SECONDS),
                    next_poll_at=timezone.now() + timedelta(seconds=settings.ORDER_POLL_SCHEDULE[0]),
                    **wanted,
                )
            return order, True
        except IntegrityError:
            # a concurrent create with the same merchant_order_no won the insert
            existing = Order.objects.get(merchant_id=merchant.pk, merchant_order_no=merchant_order_no)
    different = [f for f in IDEMPOTENT_FIELDS if getattr(existing, f) != wanted[f]]
    if different:
        raise Conflict(
            f"merchant_order_no {merchant_order_no!r} already used with different fields",
            fields={f: "differs from the existing order" for f in different},
            code="idempotency_conflict",
        )
    return existing, False


def order_pay_url(order: Order) -> str:
    return bank.pay_url(
        out_trade_no=order.out_trade_no,
        amount=order.amount,
        currency=order.currency,
        subject=order.subject,
        expires_at=int(order.expires_at.timestamp()),
    )


# --- bank payments: from the gateway's notify message, or found by polling the bank ---------

def bank_payment_apply(
    *, out_trade_no: str, bank_trade_no: str, amount: int, currency: str, paid_at: str, source: str
) -> PaymentRecord:
    """Apply one bank payment to its order, once. Runs inside ``atomic(using="orders")``.

    Completes a payable order whose amount and currency match (-> SUCCESS, publishes
    ``order.paid`` in the same transaction). Anything else is recorded FLAGGED for a human.
    Replays of the same bank trade number return the first record and change nothing.

    A notify and a poll of the same payment may race: the order row is locked first, then the
    record is inserted in a savepoint before anything else changes; the unique bank trade number
    decides which one applies, and the loser returns the winner's record.
    """
    paid_at_dt = parse_datetime(paid_at) if isinstance(paid_at, str) else paid_at
    order = Order.objects.select_for_update().filter(out_trade_no=out_trade_no).first()
    reason = _why_not_payable(order, amount=amount, currency=currency)
    record = PaymentRecord(
        bank_trade_no=bank_trade_no, out_trade_no=out_trade_no, order_id=order.pk if order else None,
        amount=amount, currency=currency, paid_at=paid_at_dt, source=source, reason=reason,
        outcome=PaymentRecord.Outcome.FLAGGED if reason else PaymentRecord.Outcome.APPLIED,
    )
    try:
        with transaction.atomic(using="orders"):
            record.save(force_insert=True)
    except IntegrityError:
        # a locking read: it sees the winner's committed row whatever this transaction's snapshot
        existing = PaymentRecord.objects.select_for_update().filter(bank_trade_no=bank_trade_no).first()
        if existing is None:
            raise  # not a replay: a real integrity problem
        return existing
    if reason:
        logger.error("bank payment %s flagged for review: %s", bank_trade_no, reason)
        return record
    order.transition(Order.Status.PAYING)
    order.transition(Order.Status.SUCCESS, bank_trade_no=bank_trade_no, paid_at=paid_at_dt, next_poll_at=None)
    event = order_paid_event(order)
    publish(event.TOPIC, event.to_payload(), using="orders")
    return record


def _why_not_payable(order: Order | None, *, amount: int, currency: str) -> str:
    if order is None:
        return "no order with this out_trade_no"
    if order.status == Order.Status.SUCCESS:
        return f"order already paid by bank trade {order.bank_trade_no}"
    if order.status != Order.Status.CREATED:
        return f"order is {order.status}, not payable"
    if amount != order.amount or currency != order.currency:
        return f"paid {amount} {currency}, order is {order.amount} {order.currency}"
    return ""


def order_paid_event(order: Order) -> OrderPaid:
    merchant = Merchant.objects.get(pk=order.merchant_id)
    return OrderPaid(
        order_id=order.pk, out_trade_no=order.out_trade_no, merchant_id=order.merchant_id,
        merchant_order_no=order.merchant_order_no, payer_id=order.payer_id, amount=order.amount,
        currency=order.currency, fee=fee_for(order.amount, merchant.fee_rate_bp),
        bank_trade_no=order.bank_trade_no, paid_at=order.paid_at.isoformat(),
        notify_url=order.notify_url or merchant.notify_url,
    )


# --- order polling: ask the bank when no notify has come -----------------------------------


def _next_poll_at(order: Order, now):
    """Waits between polls: ORDER_POLL_SCHEDULE, then every ORDER_POLL_LATE_INTERVAL until expiry."""
    schedule, done = settings.ORDER_POLL_SCHEDULE, order.poll_count + 1
    wait = schedule[done] if done < len(schedule) else settings.ORDER_POLL_LATE_INTERVAL
    due = now + timedelta(seconds=wait)
    return due if due <= order.expires_at else None


def orders_poll_bank(*, now=None, limit: int = 200, budget_seconds: float = BANK_PASS_BUDGET_SECONDS) -> int:
    """One polling pass: for each CREATED order whose poll is due, ask the bank; a found payment
    goes through :func:`bank_payment_apply`, exactly like a notify. Returns orders asked.

    The claim moves every claimed order's next poll forward before any question, so an order the
    pass does not reach (bank down, budget spent) is simply asked at its next poll time.
    """
    now = now or timezone.now()
    with transaction.atomic(using="orders"):
        due = list(
            Order.objects.select_for_update(skip_locked=True)
            .filter(status=Order.Status.CREATED, next_poll_at__lte=now)
            .order_by("next_poll_at")[:limit]
        )
        for order in due:  # claim: move the next poll forward before asking
            Order.objects.filter(pk=order.pk).update(poll_count=F("poll_count") + 1, next_poll_at=_next_poll_at(order, now))
    deadline = time.monotonic() + budget_seconds
    asked = 0
    for order in due:
        if time.monotonic() >= deadline:
            logger.warning("poll pass spent its %s s budget: %d claimed orders wait for their next poll",
                           budget_seconds, len(due) - asked)
            break
        asked += 1
        try:
            payment = bank.query_payment(order.out_trade_no)
        except bank.BankUnavailable as exc:
            logger.warning("polling %s: %s; asking again at its next poll", order.out_trade_no, exc)
            continue
        if payment is not None and payment["status"] == "SUCCESS":
            _bank_payment_apply_found(payment)
    return asked


def _bank_payment_apply_found(payment: dict) -> PaymentRecord | None:
    """Apply a payment the bank reported when asked, in its own transaction. A pass goes on
    whatever one payment does: a failure is logged (the order stays CREATED, asked again) -> None."""
    try:
        with transaction.atomic(using="orders"):
            return bank_payment_apply(
                out_trade_no=payment["out_trade_no"], bank_trade_no=payment["bank_trade_no"],
                amount=payment["amount"], currency=payment["currency"], paid_at=payment["paid_at"], source="poll",
            )
    except Exception:
        logger.exception("applying bank payment %s of %s failed", payment.get("bank_trade_no"), payment.get("out_trade_no"))
        return None


# --- order expiry: close what the bank says was not paid ---------------------------------


def orders_close_expired(*, now=None, limit: int = 100, budget_seconds: float = BANK_PASS_BUDGET_SECONDS) -> int:
    """One expiry pass over CREATED orders past their expiry, oldest first. Returns orders closed.

    A payer may pay in the last minutes while the bank's notify is still on its way, so each
    order's bank is asked before closing: paid -> the payment is applied (SUCCESS), as polling
    does; no payment -> CLOSED; the bank cannot be asked -> the order stays CREATED for the next
    pass, until it expired more than ``ORDER_CLOSE_GRACE_SECONDS`` ago: then it is closed anyway
    and a payment arriving later is flagged for a human.
    """
    now = now or timezone.now()
    grace = timedelta(seconds=settings.ORDER_CLOSE_GRACE_SECONDS)
    with transaction.atomic(using="orders"):  # skip orders another pass holds; hold nothing while asking
        expired = list(
            Order.objects.select_for_update(skip_locked=True)
            .filter(status=Order.Status.CREATED, expires_at__lt=now)
            .order_by("expires_at")[:limit]
        )
    deadline = time.monotonic() + budget_seconds
    closed = 0
    for order in expired:
        if time.monotonic() >= deadline:
            logger.warning("expiry pass spent its %s s budget: the next pass takes over", budget_seconds)
            break
        try:
            payment = bank.query_payment(order.out_trade_no)
        except bank.BankUnavailable as exc:
            if order.expires_at > now - grace:
                logger.warning("expired order %s stays CREATED until the bank answers: %s", order.out_trade_no, exc)
                continue
            logger.warning("closing %s without the bank's answer, expired over %s ago: %s", order.out_trade_no, grace, exc)
        else:
            if payment is not None and payment["status"] == "SUCCESS":
                record = _bank_payment_apply_found(payment)
                if record is None or record.outcome == PaymentRecord.Outcome.APPLIED:
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
