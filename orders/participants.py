"""Orders as a TCC participant: ``orders.pay``.

    try      CREATED -> PAYING (the order row is locked: a bank and a balance payment of the
             same order serialise here, and the second one's try is refused); a balance
             payment of an order past its expires_at is refused (409 order_expired)
    confirm  PAYING -> SUCCESS, records a bank payment APPLIED, publishes ``order.paid``, all in
             one transaction of the ``orders`` database
    cancel   PAYING -> CREATED; an order already final is left as it is

Try and confirm are batched (``tcc.many``): one call takes the ops of many branches and applies
them set-based (one lock query, one UPDATE, one upsert, one outbox INSERT), or raises, and the
framework reruns each op alone, so a one-op call is the single op. The framework runs every
call in ``atomic(using="orders")`` with its barrier rows, so duplicates, empty cancels and late
tries never reach this code. The payload, an ``OrderPayment`` (``paysys.contracts``), is built
once by the initiator (:func:`orders.payments.pay_branches`): fee and points are computed there,
so ``order.paid`` says exactly what funds credited and points awarded.
"""

from __future__ import annotations

import logging

from django.db import connections
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orders.models import Order, OrderNotPayable, PaymentRecord, PayMethod
from paysys import tcc
from paysys.contracts import OrderPaid, OrderPayment
from paysys.core.errors import NotFound
from paysys.core.steps import log_steps
from paysys.messaging import publish_many

logger = logging.getLogger(__name__)

ACTION = OrderPayment.ACTION


def _payments(ops: list[tcc.BranchOp]) -> list[tuple[str, OrderPayment]]:
    return [(op.xid, OrderPayment.from_payload(op.payload)) for op in ops]


def _locked_orders(payments: list[tuple[str, OrderPayment]]) -> list[Order]:
    """The order of each payment, all locked by ONE ``select_for_update`` in primary-key order (the
    registry's deadlock rule); NotFound names the first payment whose order does not exist.

    Several orders are locked by primary key, looked up first: locking through the
    ``out_trade_no`` index would take the rows in whatever order the plan the optimizer picks
    for that IN list walks them (by out_trade_no on a large table, by pk on a small one), and two
    batches on different plans could deadlock. A single order needs neither the lookup nor an
    order.
    """
    numbers = [payment.out_trade_no for _, payment in payments]
    rows = Order.objects.filter(out_trade_no__in=numbers)
    if len(set(numbers)) > 1:
        rows = Order.objects.filter(pk__in=list(rows.values_list("pk", flat=True)))
    locked = {order.out_trade_no: order for order in rows.select_for_update().order_by("pk")}
    for number in numbers:
        if number not in locked:
            raise NotFound(f"no order {number}")
    return [locked[number] for number in numbers]


@tcc.many
def pay_try(ops: list[tcc.BranchOp]) -> None:
    """Hold every op's order for its transaction: one lock and one UPDATE for the whole batch."""
    payments = _payments(ops)
    orders = _locked_orders(payments)
    now = timezone.now()
    for (_, payment), order in zip(payments, orders, strict=False):
        if (order.amount, order.currency) != (payment.amount, payment.currency):
            raise OrderNotPayable(
                f"paying {payment.amount} {payment.currency}, order is {order.amount} {order.currency}"
            )
        if order.status != Order.Status.CREATED:
            raise OrderNotPayable(
                f"order is {order.status}, not payable", code=f"order_{order.status.lower()}"
            )
        # the wallet pays only until the order expires, whether or not the expiry pass has closed
        # it yet; a bank payment made in time may still arrive after (the expiry pass asks the bank)
        if payment.method == PayMethod.BALANCE and order.expires_at <= now:
            raise OrderNotPayable(
                f"order expired at {order.expires_at:%Y-%m-%d %H:%M:%S} UTC; create a new order to pay it",
                code="order_expired",
            )
    Order.transition_many(
        Order.Status.PAYING,
        [
            (order, {"tcc_xid": xid, "pay_method": payment.method})
            for (xid, payment), order in zip(payments, orders, strict=False)
        ],
    )


@tcc.many
def pay_confirm(ops: list[tcc.BranchOp]) -> None:
    """Complete every op's order, record its bank payment APPLIED and publish ``order.paid``:
    one lock and one statement each for the orders, the payment records and the outbox."""
    payments = _payments(ops)
    orders = _locked_orders(payments)
    moves = []
    for (xid, payment), order in zip(payments, orders, strict=False):
        if order.status != Order.Status.PAYING or order.tcc_xid != xid:
            # the barrier lets a confirm through only after this xid's try committed: whatever
            # moved the order since is a bug; raising keeps the branch retried, then flagged for a human
            raise OrderNotPayable(
                f"confirm of {xid}: order {order.out_trade_no} is {order.status} held by {order.tcc_xid!r}"
            )
        paid_at = parse_datetime(payment.paid_at) if payment.paid_at else timezone.now()
        moves.append(
            (
                order,
                {
                    "bank_trade_no": payment.bank_trade_no,
                    "paid_at": paid_at,
                    "next_poll_at": None,
                },
            )
        )
    Order.transition_many(Order.Status.SUCCESS, moves)
    _record_applied(
        [
            PaymentRecord(
                bank_trade_no=order.bank_trade_no,
                out_trade_no=order.out_trade_no,
                order_id=order.pk,
                amount=order.amount,
                currency=order.currency,
                paid_at=order.paid_at,
                source=payment.source,
                outcome=PaymentRecord.Outcome.APPLIED,
                reason="",
            )
            for (_, payment), order in zip(payments, orders, strict=False)
            if payment.method == PayMethod.BANK
        ]
    )
    events = [
        order_paid_event(
            order, fee=payment.fee, points=payment.points, notify_url=payment.notify_url
        )
        for (_, payment), order in zip(payments, orders, strict=False)
    ]
    publish_many(events, using="orders", business_keys=[order.out_trade_no for order in orders])
    log_steps(
        logger,
        "order %s paid (%s): %s %s, merchant %s, order no %s",
        [
            (
                order.out_trade_no,
                payment.method,
                order.amount,
                order.currency,
                order.merchant_id,
                order.merchant_order_no,
            )
            for (_, payment), order in zip(payments, orders, strict=False)
        ],
        using="orders",
    )


def _record_applied(records: list[PaymentRecord]) -> None:
    """Upsert bank payments as APPLIED, one statement: a record already there for a bank trade
    number (FLAGGED earlier, say) takes these values, as ``update_or_create`` would."""
    if not records:
        return
    features = connections["orders"].features
    PaymentRecord.objects.bulk_create(
        records,
        update_conflicts=True,
        # MariaDB upserts on any unique key and takes no conflict target
        unique_fields=["bank_trade_no"] if features.supports_update_conflicts_with_target else None,
        update_fields=[
            "out_trade_no",
            "order_id",
            "amount",
            "currency",
            "paid_at",
            "source",
            "outcome",
            "reason",
        ],
    )


def pay_cancel(payload: dict, *, xid: str) -> None:
    """Single: a cancel is the rare path (one failed try), not worth a set-based version."""
    [order] = _locked_orders([(xid, OrderPayment.from_payload(payload))])
    if order.status == Order.Status.PAYING and order.tcc_xid == xid:
        order.transition(Order.Status.CREATED, tcc_xid="", pay_method="")
    else:  # final already, or never held by this xid: nothing of this try is left to undo
        logger.info("cancel of %s leaves order %s %s", xid, order.out_trade_no, order.status)


def order_paid_event(order: Order, *, fee: int, points: int, notify_url: str) -> OrderPaid:
    return OrderPaid(
        order_id=order.pk,
        out_trade_no=order.out_trade_no,
        merchant_id=order.merchant_id,
        merchant_order_no=order.merchant_order_no,
        payer_id=order.payer_id,
        amount=order.amount,
        currency=order.currency,
        fee=fee,
        bank_trade_no=order.bank_trade_no or None,
        paid_at=order.paid_at.isoformat(),
        notify_url=notify_url,
        method=order.pay_method,
        points_awarded=points,
    )


def register() -> None:
    tcc.participant(
        ACTION, alias="orders", queue="orders", try_=pay_try, confirm=pay_confirm, cancel=pay_cancel
    )
