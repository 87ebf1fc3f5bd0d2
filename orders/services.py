from __future__ import annotations

import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orders.models import IllegalTransition, Order, OrderNotPayable, PaymentRecord, PayMethod
from orders.participants import ACTION
from orders.selectors import order_get, order_notify_url
from paysys import bank, messaging, tcc
from paysys.core.errors import Conflict, DomainError, InvalidInput, LimitReached, Unavailable
from paysys.core.models import Merchant, Payer, PayerAgreement
from paysys.core.money import fee_for, points_for
from paysys.core.participants import agreement_branch
from paysys.core.ratelimit import SharedRateLimit
from paysys.core.services import agreement_for_payment, agreement_limits_check

logger = logging.getLogger(__name__)

# one polling or expiry pass stops asking the bank after this long; the next pass goes on
BANK_PASS_BUDGET_SECONDS = 20

# a balance payment's answer waits this long for the orders confirm to land after the decision
PAY_CONFIRM_WAIT_SECONDS = 2.0

# the TCC global transactions orders runs (declared in OrdersConfig.ready, for /metrics)
COMPLETE_ORDER = "complete_order"  # a bank payment: orders.pay, funds.credit, points.award
PAY_ORDER_BALANCE = "pay_order_balance"  # a balance payment: also funds.debit of the payer's wallet

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
        raise InvalidInput(
            "unsupported currency",
            fields={"currency": f"one of {', '.join(settings.ORDER_CURRENCIES)}"},
        )
    wanted = {
        "amount": amount,
        "currency": currency,
        "subject": subject,
        "payer_id": payer_id,
        "notify_url": notify_url or "",
    }
    existing = Order.objects.filter(
        merchant_id=merchant.pk, merchant_order_no=merchant_order_no
    ).first()
    if existing is None:
        if not Payer.objects.filter(pk=payer_id).exists():
            raise InvalidInput("unknown payer", fields={"payer_id": "no such payer"})
        _check_open_orders_cap(merchant)
        try:
            with transaction.atomic(using="orders"):
                order = Order.objects.create(
                    out_trade_no=new_out_trade_no(),
                    merchant_id=merchant.pk,
                    merchant_order_no=merchant_order_no,
                    expires_at=timezone.now() + timedelta(seconds=settings.ORDER_EXPIRY_SECONDS),
                    next_poll_at=timezone.now()
                    + timedelta(seconds=settings.ORDER_POLL_SCHEDULE[0]),
                    **wanted,
                )
            return order, True
        except IntegrityError:
            # a concurrent create with the same merchant_order_no won the insert
            existing = Order.objects.get(
                merchant_id=merchant.pk, merchant_order_no=merchant_order_no
            )
    different = [f for f in IDEMPOTENT_FIELDS if getattr(existing, f) != wanted[f]]
    if different:
        raise Conflict(
            f"merchant_order_no {merchant_order_no!r} already used with different fields",
            fields={f: "differs from the existing order" for f in different},
            code="idempotency_conflict",
        )
    return existing, False


def _check_open_orders_cap(merchant: Merchant) -> None:
    """Every open unpaid order is polled at the bank until it expires: one merchant creating
    orders faster than they are paid must not make lost-notify recovery fall behind for everyone.
    Counts at most cap + 1 rows. A soft cap: concurrent creates may pass it by a few."""
    cap = merchant.max_open_orders or settings.ORDER_MAX_OPEN_PER_MERCHANT
    open_orders = Order.objects.filter(
        merchant_id=merchant.pk, status=Order.Status.CREATED, expires_at__gt=timezone.now()
    )
    if open_orders.values("pk")[: cap + 1].count() >= cap:
        raise LimitReached(
            f"this merchant has {cap} open unpaid orders, the most allowed; "
            "create more once some are paid, closed or expired",
            code="too_many_open_orders",
        )


def order_pay_url(order: Order) -> str:
    return bank.pay_url(
        out_trade_no=order.out_trade_no,
        amount=order.amount,
        currency=order.currency,
        subject=order.subject,
        expires_at=int(order.expires_at.timestamp()),
    )


# --- completing a paid order: a TCC over orders, funds and points --------------------------


def pay_branches(
    order: Order,
    *,
    method: str,
    bank_trade_no: str = "",
    paid_at: str = "",
    source: str = "",
    merchant: Merchant | None = None,
    agreement: PayerAgreement | None = None,
) -> list:
    """The branches of one payment of ``order``. Fee and points are computed here, once, and
    every participant gets the same figures (participants are named, never imported).

    A balance payment is made under the payer's ``agreement`` with the merchant: its branch comes
    first, so a payment the agreement refuses holds no order and freezes no wallet."""
    merchant = merchant or Merchant.objects.get(pk=order.merchant_id)
    fee = fee_for(order.amount, merchant.fee_rate_bp)
    points = points_for(order.amount, order.currency)
    common = {"out_trade_no": order.out_trade_no, "currency": order.currency}
    branches = []
    if method == PayMethod.BALANCE:
        if agreement is None:
            raise ValueError("a balance payment needs the payer's agreement")
        branches.append(
            agreement_branch(
                agreement,
                amount=order.amount,
                currency=order.currency,
                out_trade_no=order.out_trade_no,
            )
        )
    branches.append(
        tcc.Branch(
            ACTION,
            {
                **common,
                "amount": order.amount,
                "method": method,
                "bank_trade_no": bank_trade_no,
                "paid_at": paid_at,
                "source": source,
                "fee": fee,
                "points": points,
                "notify_url": order_notify_url(order, merchant),
            },
        )
    )
    if method == PayMethod.BALANCE:
        branches.append(
            tcc.Branch(
                "funds.debit",
                {
                    **common,
                    "owner_type": "payer",
                    "owner_id": order.payer_id,
                    "amount": order.amount,
                },
            )
        )
    if order.amount - fee:
        branches.append(
            tcc.Branch(
                "funds.credit",
                {
                    **common,
                    "owner_type": "merchant",
                    "owner_id": order.merchant_id,
                    "amount": order.amount - fee,
                },
            )
        )
    if points:
        branches.append(
            tcc.Branch("points.award", {**common, "payer_id": order.payer_id, "points": points})
        )
    return branches


# --- bank payments: from the gateway's notify message, or found by polling the bank ---------


class PaymentNotCompleted(Exception):
    """A bank payment whose TCC cancelled (a service down, or the order held by another payment):
    nothing changed; whoever delivered it tries again later (message recovery, the next poll)."""


@dataclass(frozen=True)
class BankPayment:
    out_trade_no: str
    bank_trade_no: str
    amount: int
    currency: str
    paid_at: str
    source: str


def bank_payment_apply(
    *, out_trade_no: str, bank_trade_no: str, amount: int, currency: str, paid_at: str, source: str
) -> str:
    """Complete the order of one bank payment, once: :func:`bank_payments_apply` of one."""
    result = bank_payments_apply(
        [BankPayment(out_trade_no, bank_trade_no, amount, currency, paid_at, source)]
    )[0]
    if isinstance(result, Exception):
        raise result
    return result


def bank_payments_apply(payments: list[BankPayment]) -> list[str | PaymentNotCompleted]:
    """Complete the orders of many bank payments, each once, with one ``tcc.run_many``. Per
    payment: APPLIED (the confirm decision is committed: order, merchant credit and points follow
    in phase two), FLAGGED (recorded for a human: unknown order, amount or currency mismatch,
    order closed or already paid; no TCC), or a :class:`PaymentNotCompleted` when its TCC
    cancelled (nothing changed; whoever delivered it tries again later).

    Must run outside any transaction on ``orders``: the orders tries commit on their own. Replays
    are safe: the TCC's business key is ``bank:<bank trade number>``, so a redelivery resumes the
    open transaction or finds it confirmed, and a payment is never completed twice.
    """
    recorded = dict(
        PaymentRecord.objects.filter(
            bank_trade_no__in=[p.bank_trade_no for p in payments]
        ).values_list("bank_trade_no", "outcome")
    )
    orders = Order.objects.in_bulk([p.out_trade_no for p in payments], field_name="out_trade_no")
    merchants = Merchant.objects.in_bulk({o.merchant_id for o in orders.values()})
    results: dict[int, str | PaymentNotCompleted] = {}
    jobs: dict[int, tuple[str, list]] = {}
    for i, payment in enumerate(payments):
        try:  # one payment's failure is its own: it must not sink the others of the batch
            order = orders.get(payment.out_trade_no)
            if payment.bank_trade_no in recorded:
                results[i] = recorded[payment.bank_trade_no]
            elif reason := _why_not_payable(order, payment):
                results[i] = _payment_flag(order, payment, reason=reason)
            else:
                jobs[i] = (
                    f"bank:{payment.bank_trade_no}",
                    pay_branches(
                        order,
                        method=PayMethod.BANK,
                        bank_trade_no=payment.bank_trade_no,
                        paid_at=payment.paid_at,
                        source=payment.source,
                        merchant=merchants.get(order.merchant_id),
                    ),
                )
        except Exception as exc:  # noqa: BLE001 - this payment's answer; its message is resent
            results[i] = _failed(payment, exc)
    answers = tcc.run_many(COMPLETE_ORDER, list(jobs.values())) if jobs else []
    for i, answer in zip(jobs, answers, strict=False):
        try:
            results[i] = (
                PaymentRecord.Outcome.APPLIED
                if isinstance(answer, tcc.Outcome)
                else _not_completed(payments[i], orders[payments[i].out_trade_no], answer)
            )
        except Exception as exc:  # noqa: BLE001 - as above
            results[i] = _failed(payments[i], exc)
    return [results[i] for i in range(len(payments))]


def _failed(payment: BankPayment, cause: Exception) -> PaymentNotCompleted:
    error = PaymentNotCompleted(
        f"bank payment {payment.bank_trade_no} not completed: {cause.__class__.__name__}: {cause}"
    )
    error.__cause__ = cause
    return error


def _not_completed(
    payment: BankPayment, order: Order, failed: tcc.TryFailed
) -> str | PaymentNotCompleted:
    if failed.action == ACTION and not failed.is_transient:
        # the order moved meanwhile: closed or paid by another payment -> flag; held by a
        # payment still in flight -> try again later, when it has ended one way or the other
        order.refresh_from_db()
        if reason := _why_not_payable(order, payment):
            return _payment_flag(order, payment, reason=reason)
    return _failed(payment, failed)


def _payment_flag(order: Order | None, payment: BankPayment, *, reason: str) -> str:
    paid_at = (
        parse_datetime(payment.paid_at) if isinstance(payment.paid_at, str) else payment.paid_at
    )
    record, created = PaymentRecord.objects.get_or_create(
        bank_trade_no=payment.bank_trade_no,
        defaults={
            "out_trade_no": payment.out_trade_no,
            "order_id": order.pk if order else None,
            "amount": payment.amount,
            "currency": payment.currency,
            "paid_at": paid_at,
            "source": payment.source,
            "reason": reason,
            "outcome": PaymentRecord.Outcome.FLAGGED,
        },
    )
    if created:
        logger.error("bank payment %s flagged for review: %s", payment.bank_trade_no, reason)
    return record.outcome


def _why_not_payable(order: Order | None, payment: BankPayment) -> str:
    """Why a bank payment can never complete this order ("" when it may: CREATED, or PAYING by a
    transaction that may still cancel, or by this payment's own)."""
    if order is None:
        return "no order with this out_trade_no"
    if order.status == Order.Status.SUCCESS:
        by = (
            f"bank trade {order.bank_trade_no}"
            if order.bank_trade_no
            else f"{order.pay_method} payment {order.tcc_xid}"
        )
        return f"order already paid by {by}"
    if order.status == Order.Status.PAYING:
        # held by a transaction whose CONFIRM is decided: it will be SUCCESS, this payment never
        holder = tcc.confirmed_key(order.tcc_xid)
        if holder and holder != f"bank:{payment.bank_trade_no}":
            return f"order already paid by {order.pay_method} payment {order.tcc_xid} ({holder}; completing)"
    amount, currency = payment.amount, payment.currency
    if order.status not in (Order.Status.CREATED, Order.Status.PAYING):
        return f"order is {order.status}, not payable"
    if amount != order.amount or currency != order.currency:
        return f"paid {amount} {currency}, order is {order.amount} {order.currency}"
    return ""


# --- balance payments: the payer's wallet pays, with the payer's consent ---------------------


def order_pay_with_balance(
    *, merchant: Merchant, merchant_order_no: str, payer_token: str
) -> Order:
    """Pay the merchant's order from its payer's wallet, under the payer's agreement with this
    merchant (``payer_token`` is the agreement's token): a TCC over the agreement (the payment
    counted against its limits), orders (-> PAYING), funds (payer debit, merchant credit of
    amount - fee) and points. Returns the order once the confirm decision is committed, after
    waiting briefly for the orders confirm (``PAY_CONFIRM_WAIT_SECONDS``).

    Raises NotFound (another merchant's order), Forbidden (the token is not the payer's
    agreement with this merchant, it is revoked, or the payment is over a limit: the code says
    which; checked before anything is written, and again, atomically, by the agreement's try,
    the TCC's first), OrderNotPayable, InsufficientFunds, or Unavailable when a service did not
    answer (cancelled: nothing changed; also while another payment holds the order). Concurrent
    calls for one order share one business key, ``balance:<out_trade_no>``: one pays, the others
    resume it or find it decided (or are refused by the order's try).
    """
    order = order_get(merchant=merchant, merchant_order_no=merchant_order_no)
    agreement = agreement_for_payment(
        payer_token=payer_token, payer_id=order.payer_id, merchant_id=merchant.pk
    )
    if order.status == Order.Status.SUCCESS and order.pay_method == PayMethod.BALANCE:
        return order  # a replay of the call that paid it
    # PAYING by a balance payment: a concurrent call, or one whose answer was lost; tcc.run with
    # the same business key resumes it or finds it decided, so this call gets the same answer
    in_flight = order.status == Order.Status.PAYING and order.pay_method == PayMethod.BALANCE
    if order.status != Order.Status.CREATED and not in_flight:
        raise OrderNotPayable(
            f"order is {order.status}, not payable", code=f"order_{order.status.lower()}"
        )
    if not in_flight:  # (an in-flight payment is counted already: its try decides)
        agreement_limits_check(agreement, amount=order.amount, currency=order.currency)
    try:
        tcc.run(
            PAY_ORDER_BALANCE,
            business_key=f"balance:{order.out_trade_no}",
            branches=pay_branches(
                order, method=PayMethod.BALANCE, merchant=merchant, agreement=agreement
            ),
        )
    except tcc.TryFailed as exc:
        logger.info("balance payment of %s cancelled: %s", order.out_trade_no, exc)
        if exc.is_transient:
            raise Unavailable(
                f"a service did not answer ({exc.action}); nothing was charged, retry later"
            ) from exc
        if (
            exc.action == ACTION
            and Order.objects.filter(pk=order.pk, status=Order.Status.PAYING).exists()
        ):
            # held by another payment still in flight, or by an earlier attempt whose cancel is on
            # its way: not a final refusal
            raise Unavailable(
                "the order is being paid or released by another payment; retry later"
            ) from exc
        if isinstance(exc.cause, DomainError):
            raise exc.cause from exc
        raise
    return _order_after_decision(order)


def _order_after_decision(order: Order) -> Order:
    """The decision is committed, the order will be SUCCESS; give its confirm a moment to land."""
    deadline, pause = time.monotonic() + PAY_CONFIRM_WAIT_SECONDS, 0.01
    while True:
        order.refresh_from_db()
        if order.status == Order.Status.SUCCESS or time.monotonic() >= deadline:
            return order
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(
            pause * 2, 0.16
        )  # soon after the decision when phase two is quick; few reads when not


# --- order polling: ask the bank when no notify has come -----------------------------------

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
        for order in due:  # claim: move the next poll forward before asking
            Order.objects.filter(pk=order.pk).update(
                poll_count=F("poll_count") + 1, next_poll_at=claimed[order.pk]
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
                _bank_payment_apply_found(payment)
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
    if not _bank_question_allowed(deadline):
        return _NOT_ASKED
    try:
        return bank.query_payment(out_trade_no)
    except bank.BankUnavailable as exc:
        logger.warning("polling %s: %s; asking again at its next poll", out_trade_no, exc)
        return None


def _bank_question_allowed(deadline: float) -> bool:
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


def _bank_payment_apply_found(payment: dict) -> str | None:
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


# --- order expiry: close what the bank says was not paid ---------------------------------


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
        if not _bank_question_allowed(deadline):  # asks within the polling bound, too
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
                outcome = _bank_payment_apply_found(payment)
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
