"""Order polling: orders asks the bank itself when no notify has come (docs/architecture.md), a
found payment applied as a notify's message would be (``orders.payments``). The bound on
questions to the bank and the applying of a found payment serve the expiry pass too
(``orders.expiry``)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from orders.models import Order
from orders.payments import PaymentNotCompleted, bank_payment_apply
from paysys import bank, messaging
from paysys.core.ratelimit import SharedRateLimit

logger = logging.getLogger(__name__)

# one polling or expiry pass stops asking the bank after this long; the next pass goes on
BANK_PASS_BUDGET_SECONDS = 20

# every question orders asks the bank, from the polling and expiry passes of every process
BANK_QUESTIONS = SharedRateLimit(
    "orders-bank-questions", lambda: settings.ORDER_POLL_MAX_PER_SECOND
)


def _next_poll_at(order: Order, now):
    """Waits between polls: ORDER_POLL_SCHEDULE, then every ORDER_POLL_LATE_INTERVAL until expiry."""
    schedule, done = settings.ORDER_POLL_SCHEDULE, order.poll_count + 1
    wait = schedule[done] if done < len(schedule) else settings.ORDER_POLL_LATE_INTERVAL
    due = now + timedelta(seconds=wait)
    return due if due <= order.expires_at else None


def orders_poll_bank(
    *, now=None, limit: int = 200, budget_seconds: float = BANK_PASS_BUDGET_SECONDS
) -> int:
    """One polling pass: for each CREATED order whose poll is due, ask the bank; a found payment
    goes through :func:`bank_payment_apply`, exactly like a notify. Returns orders asked.

    The claim moves every claimed order's next poll forward before any question, so two passes
    never ask about the same order. The bank is asked ``ORDER_POLL_CONCURRENCY`` questions at a
    time (HTTP only, in threads), never more than ``ORDER_POLL_MAX_PER_SECOND`` a second with
    every other pass of every process (``BANK_QUESTIONS``). A claimed order whose question found
    no turn before the pass's budget ran out is given back as it was (due time, poll count): it
    stays due and a later pass asks it first, longest-due first, so the bound drops nothing.
    Found payments are applied here, one transaction each. The pass runs on the ``polling``
    queue, in a worker of its own, so however long it takes it never holds back payments.
    """
    now = now or timezone.now()
    with transaction.atomic(using="orders"):
        due = list(
            Order.objects.select_for_update(skip_locked=True)
            .filter(status=Order.Status.CREATED, next_poll_at__lte=now)
            .order_by("next_poll_at")[:limit]
        )
        claimed = {order.pk: _next_poll_at(order, now) for order in due}
        by_next_poll = defaultdict(list)  # claimed together, most orders share their next poll
        for pk, next_poll_at in claimed.items():
            by_next_poll[next_poll_at].append(pk)
        for next_poll_at, pks in by_next_poll.items():  # claim: the next poll moves forward first
            Order.objects.filter(pk__in=pks).update(
                poll_count=F("poll_count") + 1, next_poll_at=next_poll_at
            )
    if not due:
        return 0
    deadline = time.monotonic() + budget_seconds
    asked, unasked = 0, []
    with ThreadPoolExecutor(
        max_workers=max(1, min(settings.ORDER_POLL_CONCURRENCY, len(due))),
        thread_name_prefix="poll",
    ) as pool:
        answers = {
            pool.submit(_ask_bank_before, order.out_trade_no, deadline): order for order in due
        }
        for answer in as_completed(answers):
            payment = answer.result()
            if payment is _NOT_ASKED:
                unasked.append(answers[answer])
                continue
            asked += 1
            if payment is not None and payment["status"] == "SUCCESS":
                bank_payment_apply_found(payment)
    if unasked:
        for order in unasked:  # unless the order moved meanwhile (paid, or its notify came)
            Order.objects.filter(
                pk=order.pk,
                status=Order.Status.CREATED,
                poll_count=order.poll_count + 1,
                next_poll_at=claimed[order.pk],
            ).update(poll_count=order.poll_count, next_poll_at=order.next_poll_at)
        logger.warning(
            "poll pass spent its %s s budget (at most %s questions/s): %d orders stay due for the next pass",
            budget_seconds,
            settings.ORDER_POLL_MAX_PER_SECOND,
            len(unasked),
        )
    return asked


def orders_postpone_polling(*, out_trade_nos: list[str], now=None) -> int:
    """The bank's notifies of these orders are stored and their ``bank.payment_succeeded``
    message is on its way to the orders consumer: do not ask the bank about them while the
    message service may still deliver it (its whole resend schedule, until DEAD). Should it go
    DEAD (the orders service down that long), polling resumes and completes the payment without
    a human. Only a CREATED order's poll moves, and only later; past its expiry it stops (the
    expiry pass asks the bank once more before closing). Returns orders postponed.

    Orders being paid right now are skipped (``SKIP LOCKED``), never waited for: they leave
    CREATED anyway, and a payment's try never waits behind this update.
    """
    now = now or timezone.now()
    until = now + timedelta(seconds=messaging.resend_window())
    with transaction.atomic(using="orders"):
        pks = list(
            Order.objects.select_for_update(skip_locked=True)
            .filter(
                out_trade_no__in=out_trade_nos, status=Order.Status.CREATED, next_poll_at__lt=until
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        return Order.objects.filter(pk__in=pks).update(
            next_poll_at=Case(When(expires_at__gte=until, then=Value(until)), default=None)
        )


_NOT_ASKED = object()


def _ask_bank_before(out_trade_no: str, deadline: float):
    """The bank's answer about one order (payment dict or None), None when it cannot be asked now,
    or _NOT_ASKED when the pass's budget is spent before the rate bound gives it a turn. Runs in
    a polling thread: HTTP only, no database."""
    if not bank_question_allowed(deadline):
        return _NOT_ASKED
    try:
        return bank.query_payment(out_trade_no)
    except bank.BankUnavailable as exc:
        logger.warning("polling %s: %s; asking again at its next poll", out_trade_no, exc)
        return None


def bank_question_allowed(deadline: float) -> bool:
    """Wait for the rate bound's turn until ``deadline``. No turn without the shared count: a
    cache that does not answer asks nothing (the orders stay due), it never lifts the bound."""
    if time.monotonic() >= deadline:
        return False
    try:
        return BANK_QUESTIONS.acquire(deadline=deadline)
    except Exception:  # noqa: BLE001 - the cache is down: ask later
        logger.warning(
            "the bank-question rate bound cannot be counted; asking later", exc_info=True
        )
        return False


def bank_payment_apply_found(payment: dict) -> str | None:
    """Apply a payment the bank reported when asked, as a notify's message would. A pass goes on
    whatever one payment does: a failure is logged (the order stays CREATED, asked again) -> None."""
    try:
        return bank_payment_apply(
            out_trade_no=payment["out_trade_no"],
            bank_trade_no=payment["bank_trade_no"],
            amount=payment["amount"],
            currency=payment["currency"],
            paid_at=payment["paid_at"],
            source="poll",
        )
    except PaymentNotCompleted as exc:
        logger.warning("%s; asking again at its next poll", exc)
    except Exception:
        logger.exception(
            "applying bank payment %s of %s failed",
            payment.get("bank_trade_no"),
            payment.get("out_trade_no"),
        )
    return None
