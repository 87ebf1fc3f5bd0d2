"""The bank simulator: an outside bank that takes payments and tells the platform over HTTP.

It speaks only the shared protocol (:mod:`paysys.bank`) and never imports the platform's apps.

Life of a notify (one per payment, state on :class:`BankPayment`):

    bank_pay()            PENDING, due at notify_from (the payment + its delay option); a send
                          task is enqueued after commit. With the hold option: HELD, no task.
    notify_send_due()     claims the next scheduled attempt with a conditional UPDATE (exactly one
                          caller wins), POSTs the signed body, records the attempt: 2xx -> ACKED
                          (then the duplicates option sends extra copies); otherwise due again at
                          notify_from + BANK_NOTIFY_SCHEDULE[attempts], or GAVE_UP past its end
    notifies_resend_due() the beat pass: every PENDING notify whose attempt is due
    notifies_release()    HELD -> PENDING, sent latest payment first (the reorder option)

The database is the truth: a lost task message only means the next beat pass sends it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from paysys import bank
from paysys.core.errors import Conflict, InvalidInput, NotFound
from paysys.core.kicks import send_task
from paysys.sandbox.models import BankNotifyAttempt, BankPayment, BankRefund

logger = logging.getLogger(__name__)

ALIAS = "sandbox"
NotifyState = BankPayment.NotifyState

NOTIFY_TIMEOUT = 5  # seconds to connect, and again to read the answer
# a claimed attempt whose sender died without recording a result is due again after this
CLAIM_LEASE = 2 * NOTIFY_TIMEOUT + 5
RESEND_LIMIT = 100  # notifies one beat pass looks at
RESEND_BUDGET = 30  # seconds one beat pass may spend sending (the task's soft limit is 60)
MAX_DUPLICATES = 10
MAX_DELAY = 24 * 3600


@dataclass(frozen=True)
class PayOptions:
    """Test options of a programmatic pay, to produce what real banks do to a platform."""

    duplicates: int = 0  # send the notify this many extra times after it is acknowledged
    delay: int = 0  # seconds before the first notify
    hold: bool = False  # send nothing until notifies_release()


def pay_options_parse(data) -> PayOptions:
    """The JSON body of a programmatic pay -> PayOptions; bad values raise InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object of options", code="invalid")
    fields = {name: "unknown option" for name in set(data) - {"duplicates", "delay", "hold"}}
    limits = {"duplicates": MAX_DUPLICATES, "delay": MAX_DELAY}
    for name, limit in limits.items():
        value = data.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            fields[name] = f"an integer from 0 to {limit}"
    if not isinstance(data.get("hold", False), bool):
        fields["hold"] = "true or false"
    if fields:
        raise InvalidInput("invalid pay options", code="invalid", fields=fields)
    return PayOptions(
        duplicates=data.get("duplicates", 0),
        delay=data.get("delay", 0),
        hold=data.get("hold", False),
    )


def pay_token_read(token: str) -> dict:
    """The order a pay link carries; a tampered or foreign token raises NotFound."""
    order = bank.read_pay_token(token, secret=settings.SANDBOX_BANK_SECRET)
    if order is None:
        raise NotFound("unknown or tampered pay link", code="invalid_pay_token")
    return order


def pay_token_expired(order: dict, *, now: datetime | None = None) -> bool:
    return order["expires_at"] < (now or timezone.now()).timestamp()


def new_bank_trade_no(now: datetime) -> str:
    return "B" + now.strftime("%Y%m%d%H%M%S") + secrets.token_hex(6).upper()


def platform_refusal(order: dict) -> Conflict | None:
    """Why the platform says the order cannot be paid any more (paid another way, e.g. from the
    payer's wallet, or closed), asked over HTTP as a bank would; None when it is payable or the
    platform gives no verdict (unreachable: the bank takes the payment, as real banks do)."""
    if not settings.BANK_ORDER_STATUS_URL:
        return None
    answer = bank.ask_order_payable(
        order["out_trade_no"],
        url=settings.BANK_ORDER_STATUS_URL,
        secret=settings.SANDBOX_BANK_SECRET,
    )
    if answer is None:
        logger.debug(
            "platform gave no order status for %s: taking the payment", order["out_trade_no"]
        )
        return None
    if answer["payable"] or answer.get("status") is None:
        return None
    if answer["status"] in ("PAYING", "SUCCESS"):
        return Conflict("this order is already paid", code="already_paid")
    return Conflict(
        f"the merchant's platform no longer takes payments for this order ({answer['status']})",
        code="order_closed",
    )


def bank_pay(
    *, order: dict, options: PayOptions = PayOptions(), now: datetime | None = None
) -> tuple[BankPayment, bool]:
    """Take the payment for a pay-link order, once per out_trade_no. Returns ``(payment, created)``.

    Paying again returns the first payment (options ignored), even after the link expired; a
    first pay after expiry raises Conflict, and so does one for an order the platform says is
    paid already (another way) or closed. The notify is enqueued only after commit.
    """
    existing = BankPayment.objects.filter(out_trade_no=order["out_trade_no"]).first()
    if existing is not None:
        return existing, False
    now = now or timezone.now()
    if pay_token_expired(order, now=now):
        raise Conflict("this pay link has expired", code="expired")
    refusal = platform_refusal(order)
    if refusal is not None:
        raise refusal
    notify_from = None if options.hold else now + timedelta(seconds=options.delay)
    try:
        with transaction.atomic(using=ALIAS):
            payment = BankPayment.objects.create(
                bank_trade_no=new_bank_trade_no(now),
                out_trade_no=order["out_trade_no"],
                amount=order["amount"],
                currency=order["currency"],
                subject=order["subject"],
                paid_at=now,
                notify_state=NotifyState.HELD if options.hold else NotifyState.PENDING,
                notify_from=notify_from,
                next_attempt_at=notify_from,
                duplicates=options.duplicates,
            )
            if not options.hold:
                countdown = min(options.delay, settings.CELERY_MAX_COUNTDOWN)
                transaction.on_commit(
                    partial(_enqueue, "send_bank_notify", payment.pk, countdown=countdown),
                    using=ALIAS,
                )
    except IntegrityError:
        # a concurrent pay of the same order won the insert
        existing = BankPayment.objects.filter(out_trade_no=order["out_trade_no"]).first()
        if existing is None:
            raise
        return existing, False
    return payment, True


def _enqueue(task_name: str, *args, countdown: int = 0) -> None:
    try:
        send_task(f"sandbox.{task_name}", args=args, countdown=countdown)
    except Exception:  # the broker is down: the row is due, the next beat pass sends it
        logger.warning(
            "could not enqueue sandbox.%s%r; the resend pass will send it",
            task_name,
            args,
            exc_info=True,
        )


def payment_document(payment: BankPayment) -> dict:
    """What the bank says about a payment, in a notify and in a query answer."""
    return {
        "bank_trade_no": payment.bank_trade_no,
        "out_trade_no": payment.out_trade_no,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "paid_at": payment.paid_at.isoformat(),
    }


def signed_body(document: dict) -> tuple[bytes, str]:
    body = json.dumps(document, separators=(",", ":")).encode()
    return body, bank.sign(body, secret=settings.SANDBOX_BANK_SECRET)


# --- sending notifies ------------------------------------------------------------------------


def notify_schedule() -> list[int]:
    """Seconds after notify_from at which the 1st, 2nd, ... attempt is due."""
    return list(settings.BANK_NOTIFY_SCHEDULE)


def notify_claim(payment: BankPayment, *, now: datetime) -> bool:
    """Take the next attempt of a due notify. A conditional UPDATE on the attempt count the
    caller read: of two concurrent callers (two beat passes, a pass and a send task) one wins."""
    claimed = BankPayment.objects.filter(
        pk=payment.pk,
        notify_state=NotifyState.PENDING,
        notify_attempts=payment.notify_attempts,
        next_attempt_at__lte=now,
    ).update(
        notify_attempts=F("notify_attempts") + 1,
        next_attempt_at=now + timedelta(seconds=CLAIM_LEASE),
    )
    if claimed:
        payment.notify_attempts += 1
    return bool(claimed)


def notify_send_due(payment_id: int, *, now: datetime | None = None) -> bool:
    """Send the payment's notify if it is due now and this caller wins the claim. True when sent."""
    now = now or timezone.now()
    payment = BankPayment.objects.filter(pk=payment_id).first()
    if payment is None or payment.notify_state != NotifyState.PENDING:
        return False
    if payment.next_attempt_at is None or payment.next_attempt_at > now:
        return False
    if payment.notify_attempts >= len(notify_schedule()):
        # the last attempt's sender died before it recorded a result: that attempt counts
        BankPayment.objects.filter(pk=payment.pk, notify_state=NotifyState.PENDING).update(
            notify_state=NotifyState.GAVE_UP, next_attempt_at=None
        )
        return False
    if not notify_claim(payment, now=now):
        return False
    _notify_attempt(payment)
    return True


def _notify_attempt(payment: BankPayment) -> None:
    """POST the claimed attempt, record it, move the notify on: ACKED, due again, or GAVE_UP."""
    number, schedule = payment.notify_attempts, notify_schedule()
    attempt = _post_notify(payment, number=number)
    acked = attempt.status_code is not None and 200 <= attempt.status_code < 300
    result = {"last_status_code": attempt.status_code, "last_error": attempt.error}
    with transaction.atomic(using=ALIAS):
        attempt.save(using=ALIAS)
        pending = BankPayment.objects.filter(pk=payment.pk, notify_state=NotifyState.PENDING)
        if acked:
            won = pending.update(
                notify_state=NotifyState.ACKED,
                acked_at=attempt.sent_at,
                next_attempt_at=None,
                **result,
            )
        elif number >= len(schedule):
            won = pending.filter(notify_attempts=number).update(
                notify_state=NotifyState.GAVE_UP, next_attempt_at=None, **result
            )
        else:
            due = payment.notify_from + timedelta(seconds=schedule[number])
            won = pending.filter(notify_attempts=number).update(next_attempt_at=due, **result)
    if not acked:
        logger.info(
            "bank notify %s attempt %s failed: %s",
            payment.bank_trade_no,
            number,
            attempt.error or attempt.status_code,
        )
    elif won:  # only the sender that acknowledged it sends the extra copies
        for _ in range(payment.duplicates):
            _post_notify(payment, number=number, duplicate=True).save(using=ALIAS)


def _post_notify(
    payment: BankPayment, *, number: int, duplicate: bool = False
) -> BankNotifyAttempt:
    """One HTTP POST of the signed notify; returns the (unsaved) attempt record."""
    url = settings.BANK_NOTIFY_URL
    body, signature = signed_body(payment_document(payment))
    attempt = BankNotifyAttempt(
        payment=payment, number=number, duplicate=duplicate, url=url[:512], sent_at=timezone.now()
    )
    started = time.monotonic()
    try:
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", bank.SIGNATURE_HEADER: signature},
            timeout=NOTIFY_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:2000]
    else:
        attempt.status_code = response.status_code
        attempt.response_excerpt = response.text[:512]
        if not 200 <= response.status_code < 300:
            attempt.error = f"HTTP {response.status_code}"
    attempt.duration_ms = int((time.monotonic() - started) * 1000)
    return attempt


def notifies_resend_due(*, now: datetime | None = None, limit: int = RESEND_LIMIT) -> int:
    """One beat pass: send every PENDING notify whose next attempt is due. Returns notifies sent."""
    now = now or timezone.now()
    started = time.monotonic()
    due = list(
        BankPayment.objects.filter(notify_state=NotifyState.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for payment_id in due:
        if time.monotonic() - started > RESEND_BUDGET:
            break  # a slow endpoint: the rest waits for the next pass
        sent += notify_send_due(payment_id, now=max(now, timezone.now()))
    return sent


def notifies_send_in_order(payment_ids: list[int]) -> int:
    """Send the given due notifies one after another, in this order. Returns notifies sent."""
    return sum(notify_send_due(payment_id) for payment_id in payment_ids)


def notifies_release(*, now: datetime | None = None) -> list[BankPayment]:
    """Release every HELD notify, the latest payment first (the reorder option): they are
    enqueued as one task that sends them in that order. Returns the released payments, in order."""
    now = now or timezone.now()
    held = list(BankPayment.objects.filter(notify_state=NotifyState.HELD).order_by("-id"))
    released = []
    with transaction.atomic(using=ALIAS):
        for position, payment in enumerate(held):
            # microseconds apart, so a beat pass (due order) keeps the same order if the task is lost
            due = now - timedelta(microseconds=len(held) - position)
            if BankPayment.objects.filter(pk=payment.pk, notify_state=NotifyState.HELD).update(
                notify_state=NotifyState.PENDING, notify_from=due, next_attempt_at=due
            ):
                released.append(payment)
        if released:
            ids = [p.pk for p in released]
            transaction.on_commit(partial(_enqueue, "send_bank_notifies", ids), using=ALIAS)
    return released


def notifies_retry(payment_ids: list[int], *, now: datetime | None = None) -> int:
    """Give notifies that GAVE_UP a fresh schedule from now (the admin's one-click fix)."""
    now = now or timezone.now()
    return BankPayment.objects.filter(pk__in=payment_ids, notify_state=NotifyState.GAVE_UP).update(
        notify_state=NotifyState.PENDING, notify_attempts=0, notify_from=now, next_attempt_at=now
    )


# --- refunds: the platform asks the bank to give a payment back ------------------------------

REFUSE_TRIGGER = "[bank:refuse]"
LOSE_NOTIFY_TRIGGER = "[bank:lose-notify]"


def bank_refund(document: dict) -> BankRefund:
    """Take a refund request (idempotent on refund_no: the same number again is the same refund).
    Decided at once; the notify goes out after commit."""
    problems = {
        k: "required"
        for k in ("refund_no", "out_trade_no", "amount", "currency")
        if k not in document
    }
    if problems or not isinstance(document.get("amount"), int) or document["amount"] < 1:
        raise InvalidInput(
            "not a refund request", fields=problems or {"amount": "a positive integer"}
        )
    existing = BankRefund.objects.filter(refund_no=document["refund_no"]).first()
    if existing is not None:
        return existing
    reason = str(document.get("reason", ""))[:255]
    with transaction.atomic(using=ALIAS):
        payment = (
            BankPayment.objects.select_for_update()
            .filter(out_trade_no=document["out_trade_no"])
            .first()
        )
        refunded = sum(
            BankRefund.objects.filter(
                out_trade_no=document["out_trade_no"], status=BankRefund.Status.SUCCESS
            ).values_list("amount", flat=True)
        )
        refusal = ""
        if payment is None:
            refusal = "no payment for this order"
        elif refunded + document["amount"] > payment.amount:
            refusal = f"refunds would pass the payment: {payment.amount - refunded} left"
        elif REFUSE_TRIGGER in reason:
            refusal = "the payer's account is closed"
        lost = LOSE_NOTIFY_TRIGGER in reason
        try:
            refund = BankRefund.objects.create(
                refund_no=document["refund_no"],
                out_trade_no=document["out_trade_no"],
                bank_trade_no=str(document.get("bank_trade_no", ""))[:64],
                amount=document["amount"],
                currency=str(document["currency"])[:3],
                reason=reason,
                status=BankRefund.Status.REFUSED if refusal else BankRefund.Status.SUCCESS,
                refusal=refusal,
                notify_state=BankPayment.NotifyState.HELD
                if lost
                else BankPayment.NotifyState.PENDING,
                next_attempt_at=None if lost else timezone.now(),
            )
        except IntegrityError:  # a concurrent request of the same refund won
            return BankRefund.objects.get(refund_no=document["refund_no"])
        if not lost:
            transaction.on_commit(partial(_enqueue, "send_refund_notifies"), using=ALIAS)
    return refund


def refund_document(refund: BankRefund) -> dict:
    return {
        "refund_no": refund.refund_no,
        "out_trade_no": refund.out_trade_no,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "reason": refund.refusal,
    }


def refund_notifies_send_due(*, now: datetime | None = None, limit: int = RESEND_LIMIT) -> int:
    """Send every due refund notify once (its own schedule: the payment notifies'); returns acknowledged."""
    now = now or timezone.now()
    schedule, acked = notify_schedule(), 0
    due = BankRefund.objects.filter(
        notify_state=BankPayment.NotifyState.PENDING, next_attempt_at__lte=now
    )
    for refund in list(due.order_by("next_attempt_at")[:limit]):
        claimed = BankRefund.objects.filter(
            pk=refund.pk,
            notify_attempts=refund.notify_attempts,
            notify_state=BankPayment.NotifyState.PENDING,
        ).update(
            notify_attempts=F("notify_attempts") + 1,
            next_attempt_at=now + timedelta(seconds=CLAIM_LEASE),
        )
        if not claimed:
            continue
        body, signature = signed_body(refund_document(refund))
        url = settings.BANK_NOTIFY_URL.rsplit("/", 1)[0] + "/refund-notify"
        try:
            response = requests.post(
                url,
                data=body,
                timeout=NOTIFY_TIMEOUT,
                allow_redirects=False,
                headers={"Content-Type": "application/json", bank.SIGNATURE_HEADER: signature},
            )
            error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
        number = refund.notify_attempts + 1
        if not error:
            state, due_at, acked = BankPayment.NotifyState.ACKED, None, acked + 1
        elif number >= len(schedule):
            state, due_at = BankPayment.NotifyState.GAVE_UP, None
        else:
            state, due_at = (
                BankPayment.NotifyState.PENDING,
                refund.created_at + timedelta(seconds=schedule[number]),
            )
        BankRefund.objects.filter(pk=refund.pk).update(
            notify_state=state, next_attempt_at=due_at, last_error=error
        )
    return acked
