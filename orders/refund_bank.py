"""A bank payment's refund at the bank (docs/refunds.md): sent by a reliable message
(``refund.requested``, consumed by the ``polling`` worker, resent until the bank has it),
answered by the bank's signed refund notify, and, when that is lost, found by asking the bank's
refund query on a schedule, as order polling does for payments. Only the bank's word makes a
refund SUCCEEDED; a refusal makes it FAILED with the bank's reason (the holds released)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from orders.models import PayMethod, Refund
from orders.refunds import REFUND_POLL_LATE_INTERVAL, REFUND_POLL_SCHEDULE, refund_finish
from paysys import bank
from paysys.api.exceptions import error_body
from paysys.api.parsers import loads_strict
from paysys.contracts import RefundRequested
from paysys.core.errors import NotFound
from paysys.messaging import consumer

logger = logging.getLogger(__name__)


def apply_bank_answer(answer: dict) -> bool:
    """The bank's final word on a refund (its notify or its query): SUCCESS -> SUCCEEDED,
    REFUSED -> FAILED with its reason; anything else (PROCESSING) changes nothing."""
    status = answer.get("status")
    if status not in ("SUCCESS", "REFUSED"):
        return False
    _check_matches(answer)
    return refund_finish(
        answer["refund_no"],
        succeeded=status == "SUCCESS",
        failure_reason=""
        if status == "SUCCESS"
        else f"bank refused: {answer.get('reason') or 'no reason given'}",
    )


def _check_matches(answer: dict) -> None:
    """A bank answer finishes only the bank refund it names, for its amount and order: one that
    names a wallet refund, or another amount or order, or leaves either out, is refused
    (RefundMismatch), never applied."""
    refund = (
        Refund.objects.filter(refund_no=answer["refund_no"])
        .only("method", "amount", "out_trade_no")
        .first()
    )
    if refund is None:
        return  # refund_finish says NotFound
    wrong = [
        name
        for name, expected in (("amount", refund.amount), ("out_trade_no", refund.out_trade_no))
        if answer.get(name) != expected
    ]
    if refund.method != PayMethod.BANK or wrong:
        logger.error(
            "bank answer for refund %s refused: %s",
            answer["refund_no"],
            f"it differs in {', '.join(wrong)}" if wrong else "not a bank refund",
        )
        raise RefundMismatch(f"the answer does not match refund {answer['refund_no']}")


class RefundMismatch(ValueError):
    pass


# not atomic: an HTTP call; idempotent by itself (the bank keys refunds by refund_no)
@consumer(
    RefundRequested.TOPIC, queue="polling", alias="orders", name="orders.send_refund", atomic=False
)
def send_refund(message) -> None:
    """Send the refund to the bank; raising (the bank did not take it) leaves the message to be resent."""
    event = RefundRequested.from_payload(message.payload)
    bank.request_refund(
        {
            "refund_no": event.refund_no,
            "out_trade_no": event.out_trade_no,
            "bank_trade_no": event.bank_trade_no,
            "amount": event.amount,
            "currency": event.currency,
            "reason": event.reason,
        }
    )
    logger.info("refund %s of %s sent to the bank", event.refund_no, event.out_trade_no)


def refunds_poll_bank(*, now=None, limit: int = 100) -> int:
    """One pass: ask the bank's refund query about PENDING bank refunds whose poll is due (their
    notify may be lost); a final answer goes through :func:`apply_bank_answer`. The claim moves
    each refund's next poll forward first, so two passes never ask about the same one. Returns
    refunds asked."""
    now = now or timezone.now()
    with transaction.atomic(using="orders"):
        due = list(
            Refund.objects.select_for_update(skip_locked=True)
            .filter(status=Refund.Status.PENDING, next_poll_at__lte=now)
            .order_by("next_poll_at")[:limit]
        )
        for refund in due:
            done = refund.poll_count + 1
            wait = (
                REFUND_POLL_SCHEDULE[done]
                if done < len(REFUND_POLL_SCHEDULE)
                else REFUND_POLL_LATE_INTERVAL
            )
            Refund.objects.filter(pk=refund.pk).update(
                poll_count=F("poll_count") + 1, next_poll_at=now + timedelta(seconds=wait)
            )
    for refund in due:
        try:
            answer = bank.query_refund(refund.refund_no)
        except bank.BankUnavailable as exc:
            logger.warning("refund %s: %s; asking again at its next poll", refund.refund_no, exc)
            continue
        if answer is not None:  # None: the bank has not got it yet (its message is being resent)
            try:
                apply_bank_answer(answer)
            except RefundMismatch:
                continue  # logged; a human looks (the refund stays PENDING)
    return len(due)


@csrf_exempt
@require_POST
def bank_refund_notify(request):
    """``POST /gateway/bank/refund-notify``: the bank's signed refund result. Recorded (refund
    and order moved, ``refund.finished`` published) in one orders transaction before the 200;
    a repeated notify is acknowledged and changes nothing."""
    if not bank.signature_valid(request.body, request.headers.get(bank.SIGNATURE_HEADER)):
        return JsonResponse(
            error_body("invalid_signature", "sign the body with the bank's secret"), status=401
        )
    try:
        answer = loads_strict(request.body)  # no NaN, no absurd nesting: a 400, never a 500
        if not isinstance(answer, dict) or not isinstance(answer.get("refund_no"), str):
            raise ValueError
    except ValueError:
        return JsonResponse(
            error_body("malformed", "a JSON object with refund_no is required"), status=400
        )
    try:
        apply_bank_answer(answer)
    except NotFound:
        return JsonResponse(error_body("not_found", "no such refund"), status=404)
    except RefundMismatch as exc:
        return JsonResponse(error_body("mismatch", str(exc)), status=409)
    return HttpResponse(b'{"ok":true}', content_type="application/json")
