"""Refunds: money of a paid order goes back to its payer (docs/refunds.md).

A refund is a TCC ``refund_order`` keyed by ``refund:<merchant_id>:<merchant_refund_no>`` over

    orders.refund    try      lock the order row; refuse an unpaid order or an amount above what
                              is left to refund (paid - refunded - pending refunds); insert the
                              refund PENDING and reserve its amount (refunding_amount)
                     confirm  a balance payment's: SUCCEEDED now; a bank payment's: stays PENDING
                              and ``refund.requested`` goes to the bank (reliable message)
                     cancel   remove the refund and its reservation: nothing was refunded
    funds.refund     the merchant's available balance frozen (402 when it cannot cover it)
    funds.credit     a balance payment's refund only: the payer's wallet credited
    points.reverse   the payer's points reversed in proportion, never below zero

A balance payment's refund is final at the confirm: every branch posts. A bank payment's refund
keeps the merchant's and the points' holds until the bank answers; :func:`refund_finish` then
records SUCCEEDED or FAILED and publishes ``refund.finished`` in the same orders transaction:
funds and points post or release the holds, accounting books the voucher, notifications tell
the merchant. Orders never imports accounts: the participants are named.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from orders import payments  # a refund waits as a balance payment's answer does
from orders.models import Order, PayMethod, Refund
from orders.selectors import order_get, order_notify_url
from paysys import tcc
from paysys.contracts import (
    FundCredit,
    FundRefund,
    OrderRefund,
    PointsReversal,
    RefundFinished,
    RefundRequested,
)
from paysys.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from paysys.core.models import Merchant
from paysys.core.money import points_for
from paysys.messaging import publish

logger = logging.getLogger(__name__)

ACTION = OrderRefund.ACTION
REFUND_ORDER = "refund_order"  # the TCC global transaction of one refund
# fields that must match for a replayed refund request to be "the same refund"
IDEMPOTENT_FIELDS = ("merchant_order_no", "amount", "reason")
POINTS_ATTEMPTS = 5  # tries of one request whose points figure another refund moved (PointsMoved)

# waits between questions to the bank's refund query while no notify has come (seconds), then
# every REFUND_POLL_LATE_INTERVAL: a refund is never left PENDING without asking
# (orders.refund_bank.refunds_poll_bank)
REFUND_POLL_SCHEDULE = [5, 10, 30, 60, 120, 300]
REFUND_POLL_LATE_INTERVAL = 900


class NotRefundable(Conflict):
    code = "order_not_refundable"


class RefundTooLarge(Conflict):
    code = "refund_exceeds_refundable"


class PointsMoved(Unavailable):
    """The points a refund was sent with are no longer its share: another refund of the order
    made it the last one (or no longer the last) after they were reckoned. The try refuses; the
    request is tried again with the figure reckoned now."""


def new_refund_no() -> str:
    return "RF" + timezone.now().strftime("%Y%m%d") + secrets.token_hex(8).upper()


def first_poll_at():
    return timezone.now() + timedelta(seconds=REFUND_POLL_SCHEDULE[0])


def refundable(order: Order) -> int:
    """What is left to refund: paid, less refunded, less what pending refunds hold."""
    return order.amount - order.refunded_amount - order.refunding_amount


def refund_points(order: Order, amount: int) -> int:
    """The points a refund of ``amount`` takes back: the order's points (``points_for``, as
    awarded) in proportion, rounded down (the payer keeps a fraction's worth), except that a
    refund of everything left takes back every point not yet taken, so a full refund in parts
    reverses exactly what was awarded. The reversal never takes more than the payer still has
    (accounts.services.points_reverse_hold): points never go below zero."""
    awarded = points_for(order.amount, order.currency)
    if amount == refundable(order):
        taken = sum(
            Refund.objects.filter(order=order)
            .exclude(status=Refund.Status.FAILED)
            .values_list("points", flat=True)
        )
        return max(0, awarded - taken)
    return awarded * amount // order.amount


# --- the merchant's request ------------------------------------------------------------------


def refund_create(
    *,
    merchant: Merchant,
    merchant_order_no: str,
    merchant_refund_no: str,
    amount: int,
    reason: str = "",
    requested_by: str = "merchant",
) -> tuple[Refund, bool]:
    """Refund ``amount`` of the merchant's paid order, idempotently on (merchant,
    merchant_refund_no). Returns ``(refund, created)``: an identical replay returns the existing
    refund; a different request with the same number is a Conflict, nothing written.

    Raises NotFound (another merchant's order), NotRefundable (not paid), RefundTooLarge (the
    message names the refundable amount), InsufficientFunds (the merchant's available balance
    cannot cover it: nothing frozen), Unavailable (a service did not answer: nothing changed).
    """
    order = order_get(merchant=merchant, merchant_order_no=merchant_order_no)
    wanted = {"merchant_order_no": merchant_order_no, "amount": amount, "reason": reason}
    existing = _decided_refund(merchant.pk, merchant_refund_no)
    if existing is not None:
        return _same_or_conflict(existing, wanted), False
    if order.status not in Order.PAID_STATUSES:
        raise NotRefundable(f"order is {order.status}: only a paid order can be refunded")
    left = refundable(order)
    if amount > left:  # checked again under the order's lock by the try
        raise _too_large(left)
    refund_no = new_refund_no()
    for attempt in range(1, POINTS_ATTEMPTS + 1):
        branches = refund_branches(
            order,
            merchant=merchant,
            refund_no=refund_no,
            merchant_refund_no=merchant_refund_no,
            amount=amount,
            reason=reason,
            requested_by=requested_by,
        )
        try:
            tcc.run(
                REFUND_ORDER,
                business_key=f"refund:{merchant.pk}:{merchant_refund_no}",
                branches=branches,
            )
            break
        except tcc.TryFailed as exc:
            logger.info(
                "refund %s of %s cancelled: %s", merchant_refund_no, order.out_trade_no, exc
            )
            if isinstance(exc.cause, PointsMoved) and attempt < POINTS_ATTEMPTS:
                order.refresh_from_db()
                continue
            if exc.is_transient:
                raise Unavailable(
                    f"a service did not answer ({exc.action}); nothing was refunded, retry later"
                ) from exc
            raise exc.cause from exc
    refund = Refund.objects.get(merchant_id=merchant.pk, merchant_refund_no=merchant_refund_no)
    _same_or_conflict(refund, wanted)
    # a concurrent identical request resumes the same transaction, whose refund carries the
    # number of the request that began it: that request created the refund, the other replays it
    return _after_decision(refund), refund.refund_no == refund_no


def _decided_refund(merchant_id: int, merchant_refund_no: str) -> Refund | None:
    """The merchant's refund by its number once its TCC decided to go on (a row whose
    transaction is still trying or being cancelled is not a refund yet)."""
    refund = (
        Refund.objects.filter(merchant_id=merchant_id, merchant_refund_no=merchant_refund_no)
        .select_related("order")
        .first()
    )
    if refund is None or (
        refund.status == Refund.Status.PENDING and not tcc.confirmed_key(refund.tcc_xid)
    ):
        return None
    return refund


def _same_or_conflict(refund: Refund, wanted: dict) -> Refund:
    different = [
        f
        for f in IDEMPOTENT_FIELDS
        if (refund.order.merchant_order_no if f == "merchant_order_no" else getattr(refund, f))
        != wanted[f]
    ]
    if different:
        raise Conflict(
            f"merchant_refund_no {refund.merchant_refund_no!r} already used with different fields",
            fields={f: "differs from the existing refund" for f in different},
            code="idempotency_conflict",
        )
    return refund


def _too_large(left: int) -> RefundTooLarge:
    return RefundTooLarge(
        f"refund exceeds the refundable amount: {left} left to refund",
        fields={"amount": f"at most {left} (minor units)"},
    )


def _after_decision(refund: Refund) -> Refund:
    """A balance payment's refund is SUCCEEDED once the orders confirm lands: give it a moment."""
    deadline, pause = time.monotonic() + payments.PAY_CONFIRM_WAIT_SECONDS, 0.01
    while (
        refund.status == Refund.Status.PENDING
        and refund.method == PayMethod.BALANCE
        and time.monotonic() < deadline
    ):
        time.sleep(pause)
        pause = min(pause * 2, 0.16)
        refund.refresh_from_db()
    return refund


def refund_branches(
    order: Order,
    *,
    merchant: Merchant,
    refund_no: str,
    merchant_refund_no: str,
    amount: int,
    reason: str,
    requested_by: str,
) -> list[tcc.Branch]:
    method = order.pay_method or PayMethod.BANK
    settle = "now" if method == PayMethod.BALANCE else "later"  # a bank refund waits for the bank
    points = refund_points(order, amount)
    common = {"out_trade_no": order.out_trade_no, "currency": order.currency}
    why = f"refund {refund_no}"
    contracts = [
        OrderRefund(
            **common,
            refund_no=refund_no,
            merchant_id=merchant.pk,
            merchant_refund_no=merchant_refund_no,
            amount=amount,
            reason=reason,
            method=method,
            points=points,
            requested_by=requested_by,
            notify_url=order_notify_url(order, merchant),
        ),
        FundRefund(
            **common,
            owner_type="merchant",
            owner_id=order.merchant_id,
            amount=amount,
            reason=why,
            settle=settle,
        ),
    ]
    if method == PayMethod.BALANCE:
        contracts.append(
            FundCredit(
                **common, owner_type="payer", owner_id=order.payer_id, amount=amount, reason=why
            )
        )
    if points:
        contracts.append(
            PointsReversal(
                **common, payer_id=order.payer_id, points=points, reason=why, settle=settle
            )
        )
    return [tcc.Branch(c.ACTION, c.to_payload()) for c in contracts]


# --- orders.refund: the TCC participant --------------------------------------------------------


def _locked_order(out_trade_no: str) -> Order:
    order = Order.objects.select_for_update().filter(out_trade_no=out_trade_no).first()
    if order is None:
        raise NotFound(f"no order {out_trade_no}")
    return order


def refund_try(payload: dict, *, xid: str) -> None:
    request = OrderRefund.from_payload(payload)
    order = _locked_order(request.out_trade_no)  # refunds of one order queue here
    if order.status not in Order.PAID_STATUSES:
        raise NotRefundable(f"order is {order.status}: only a paid order can be refunded")
    left = refundable(order)
    if request.amount > left:
        raise _too_large(left)
    # whether this refund is the order's last, and so takes every point not yet taken, is only
    # known here, under the order's lock: a figure reckoned before it may be stale
    if request.points != refund_points(order, request.amount):
        raise PointsMoved("another refund of this order changed this refund's points; retry")
    try:
        with transaction.atomic(using="orders"):
            Refund.objects.create(
                refund_no=request.refund_no,
                merchant_id=request.merchant_id,
                order=order,
                merchant_refund_no=request.merchant_refund_no,
                out_trade_no=order.out_trade_no,
                amount=request.amount,
                currency=order.currency,
                reason=request.reason,
                method=request.method,
                points=request.points,
                tcc_xid=xid,
                requested_by=request.requested_by,
            )
    except IntegrityError as exc:  # an earlier attempt of this number, its cancel on the way
        raise Unavailable(
            "an earlier attempt of this refund is being released; retry later"
        ) from exc
    Order.objects.filter(pk=order.pk).update(
        refunding_amount=F("refunding_amount") + request.amount, updated_at=timezone.now()
    )


def refund_confirm(payload: dict, *, xid: str) -> None:
    request = OrderRefund.from_payload(payload)
    _locked_order(request.out_trade_no)
    refund = Refund.objects.select_related("order").get(tcc_xid=xid)
    if refund.status != Refund.Status.PENDING:
        return
    if refund.method == PayMethod.BALANCE:
        _finish(refund, Refund.Status.SUCCEEDED, held=False, notify_url=request.notify_url)
        return
    # a bank payment's refund: the bank is asked (reliable message), and asked again on a schedule
    Refund.objects.filter(pk=refund.pk).update(
        next_poll_at=first_poll_at(), updated_at=timezone.now()
    )
    event = RefundRequested(
        refund_no=refund.refund_no,
        out_trade_no=refund.out_trade_no,
        bank_trade_no=refund.order.bank_trade_no,
        amount=refund.amount,
        currency=refund.currency,
        reason=refund.reason,
    )
    publish(event, using="orders", business_key=refund.out_trade_no)


def refund_cancel(payload: dict, *, xid: str) -> None:
    request = OrderRefund.from_payload(payload)
    order = _locked_order(request.out_trade_no)
    deleted, _ = Refund.objects.filter(tcc_xid=xid, status=Refund.Status.PENDING).delete()
    if deleted:
        Order.objects.filter(pk=order.pk).update(
            refunding_amount=F("refunding_amount") - request.amount, updated_at=timezone.now()
        )


def register() -> None:
    tcc.participant(
        ACTION,
        alias="orders",
        queue="orders",
        try_=refund_try,
        confirm=refund_confirm,
        cancel=refund_cancel,
    )


# --- the end of a refund -----------------------------------------------------------------------


def refund_finish(refund_no: str, *, succeeded: bool, failure_reason: str = "") -> bool:
    """Record a bank refund's answer (the bank's notify, its refund query, or a human): one
    orders transaction moves the refund and its order and publishes ``refund.finished``. A
    refund already final is left as it is (a repeated notify). Returns whether it moved."""
    with transaction.atomic(using="orders"):
        refund = Refund.objects.select_related("order").filter(refund_no=refund_no).first()
        if refund is None:
            raise NotFound(f"no refund {refund_no}")
        _locked_order(refund.out_trade_no)
        refund.refresh_from_db()
        if refund.status != Refund.Status.PENDING:
            return False
        duplicate = refund.kind == Refund.Kind.DUPLICATE
        if not duplicate and not tcc.confirmed_key(refund.tcc_xid):
            return False
        merchant = Merchant.objects.get(pk=refund.merchant_id)
        _finish(
            refund,
            Refund.Status.SUCCEEDED if succeeded else Refund.Status.FAILED,
            held=not duplicate,
            failure_reason=failure_reason,
            notify_url=order_notify_url(refund.order, merchant),
        )
    return True


def _finish(
    refund: Refund, status: str, *, held: bool, notify_url: str, failure_reason: str = ""
) -> None:
    """In the caller's orders transaction, the order's row locked: the refund final, the order's
    amounts and status, and ``refund.finished``."""
    order = Order.objects.get(pk=refund.order_id)
    now = timezone.now()
    changes = {"refunding_amount": F("refunding_amount") - refund.amount, "updated_at": now}
    if (
        refund.kind == Refund.Kind.DUPLICATE
    ):  # money no order took: the order's figures never held it
        changes = {}
    elif status == Refund.Status.SUCCEEDED:
        refunded = order.refunded_amount + refund.amount
        changes["refunded_amount"] = F("refunded_amount") + refund.amount
        new = Order.Status.REFUNDED if refunded == order.amount else Order.Status.PARTIALLY_REFUNDED
        Order.check_transition(order.status, new)
        Order.objects.filter(pk=order.pk).transition(new, **changes)
    elif changes:
        Order.objects.filter(pk=order.pk).update(**changes)
    Refund.objects.filter(pk=refund.pk).transition(
        status,
        failure_reason=failure_reason[:255],
        finished_at=now,
        next_poll_at=None,
        updated_at=now,
    )
    refund.status, refund.failure_reason, refund.finished_at = status, failure_reason[:255], now
    event = RefundFinished(
        refund_id=refund.pk,
        refund_no=refund.refund_no,
        merchant_refund_no=refund.merchant_refund_no,
        order_id=order.pk,
        out_trade_no=order.out_trade_no,
        merchant_id=order.merchant_id,
        merchant_order_no=order.merchant_order_no,
        payer_id=order.payer_id,
        amount=refund.amount,
        currency=refund.currency,
        status=status,
        method=refund.method,
        xid=refund.tcc_xid,
        held=held,
        points=refund.points,
        reason=refund.reason,
        failure_reason=refund.failure_reason,
        finished_at=now.isoformat(),
        notify_url=notify_url,
        requested_by=refund.requested_by,
        kind=refund.kind,
    )
    publish(event, using="orders", business_key=order.out_trade_no)
    logger.info(
        "refund %s of order %s %s: %s %s%s",
        refund.refund_no,
        order.out_trade_no,
        status,
        refund.amount,
        refund.currency,
        f" ({failure_reason})" if failure_reason else "",
    )


# --- a duplicate bank payment, back to the payer ------------------------------------------------


def refund_duplicate_payment(*, bank_trade_no: str, requested_by: str, why: str) -> Refund:
    """Send a FLAGGED bank payment back to the payer (admin's action and its reason): money that arrived at
    the bank for an order already paid, never credited to the merchant nor booked. No TCC: no
    merchant money or points are involved; the refund goes to the bank like any bank refund
    (``refund.requested``), and the record is marked reviewed with who and ``why`` (the human's
    reason, required; the refund's reason also keeps what the payment was flagged for). Idempotent: the
    payment's refund is ``dup-<bank_trade_no>``, once."""
    from orders.models import PaymentRecord

    with transaction.atomic(using="orders"):
        record = (
            PaymentRecord.objects.select_for_update().filter(bank_trade_no=bank_trade_no).first()
        )
        if (
            record is None
            or record.outcome != PaymentRecord.Outcome.FLAGGED
            or record.order_id is None
        ):
            raise NotRefundable(
                f"bank payment {bank_trade_no} is not a flagged payment of a known order"
            )
        existing = Refund.objects.filter(
            kind=Refund.Kind.DUPLICATE, merchant_refund_no=f"dup-{bank_trade_no}"
        ).first()
        if existing is not None:
            return existing
        order = _locked_order(record.out_trade_no)
        if not why.strip():
            raise InvalidInput("say why the payment goes back", fields={"why": "required"})
        why, flagged = why.strip(), record.reason
        reason = f"{why} (duplicate payment refunded to the payer: {flagged})"[:255]
        refund = Refund.objects.create(
            refund_no=new_refund_no(),
            merchant_id=order.merchant_id,
            merchant_refund_no=f"dup-{bank_trade_no}",
            order=order,
            out_trade_no=order.out_trade_no,
            amount=record.amount,
            currency=record.currency,
            reason=reason,
            method=PayMethod.BANK,
            kind=Refund.Kind.DUPLICATE,
            requested_by=requested_by,
            next_poll_at=first_poll_at(),
        )
        PaymentRecord.objects.filter(pk=record.pk).update(
            reviewed_at=timezone.now(),
            reason=f"{flagged}; refunded ({refund.refund_no}) by {requested_by}: {why}"[:255],
        )
        event = RefundRequested(
            refund_no=refund.refund_no,
            out_trade_no=order.out_trade_no,
            bank_trade_no=bank_trade_no,
            amount=refund.amount,
            currency=refund.currency,
            reason=reason,
        )
        publish(event, using="orders", business_key=order.out_trade_no)
    logger.info(
        "duplicate bank payment %s of %s: refund %s requested by %s",
        bank_trade_no,
        order.out_trade_no,
        refund.refund_no,
        requested_by,
    )
    return refund


# --- reads ---------------------------------------------------------------------------------------


def refunds_of_order(*, merchant: Merchant, merchant_order_no: str):
    order = order_get(merchant=merchant, merchant_order_no=merchant_order_no)
    return (
        Refund.objects.filter(order=order, kind=Refund.Kind.ORDER)
        .select_related("order")
        .order_by("-id")
    )


def refund_get(*, merchant: Merchant, refund_no: str) -> Refund:
    """The merchant's refund by the platform's number; another merchant's is a missing one."""
    refund = (
        Refund.objects.filter(merchant_id=merchant.pk, refund_no=refund_no, kind=Refund.Kind.ORDER)
        .select_related("order")
        .first()
    )
    if refund is None:
        raise NotFound("no such refund")
    return refund
