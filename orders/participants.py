"""Orders as a TCC participant: ``orders.pay``.

    try      CREATED -> PAYING (the order row is locked: a bank and a balance payment of the
             same order serialise here, and the second one's try is refused)
    confirm  PAYING -> SUCCESS, records a bank payment APPLIED, publishes ``order.paid``, all in
             one transaction of the ``orders`` database
    cancel   PAYING -> CREATED; an order already final is left as it is

The framework runs each operation in ``atomic(using="orders")`` with its barrier row, so
duplicates, empty cancels and late tries never reach this code. The payload is built once by
the initiator (:func:`orders.services.pay_branches`): fee and points are computed there, so
``order.paid`` says exactly what funds credited and points awarded.
"""

from __future__ import annotations

import logging

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orders.models import Order, OrderNotPayable, PayMethod, PaymentRecord
from paysys import tcc
from paysys.contracts import OrderPaid
from paysys.core.errors import NotFound
from paysys.messaging import publish

logger = logging.getLogger(__name__)

ACTION = "orders.pay"


def _locked_order(out_trade_no: str) -> Order:
    order = Order.objects.select_for_update().filter(out_trade_no=out_trade_no).first()
    if order is None:
        raise NotFound(f"no order {out_trade_no}")
    return order


def pay_try(payload: dict, *, xid: str) -> None:
    order = _locked_order(payload["out_trade_no"])
    if (order.amount, order.currency) != (payload["amount"], payload["currency"]):
        raise OrderNotPayable(
            f"paying {payload['amount']} {payload['currency']}, order is {order.amount} {order.currency}"
        )
    if order.status != Order.Status.CREATED:
        raise OrderNotPayable(f"order is {order.status}, not payable", code=f"order_{order.status.lower()}")
    order.transition(Order.Status.PAYING, tcc_xid=xid, pay_method=payload["method"])


def pay_confirm(payload: dict, *, xid: str) -> None:
    order = _locked_order(payload["out_trade_no"])
    if order.status != Order.Status.PAYING or order.tcc_xid != xid:
        # the barrier lets a confirm through only after this xid's try committed: whatever moved
        # the order since is a bug; raising keeps the branch retried and then flagged for a human
        raise OrderNotPayable(f"confirm of {xid}: order {order.out_trade_no} is {order.status} held by {order.tcc_xid!r}")
    paid_at = parse_datetime(payload["paid_at"]) if payload.get("paid_at") else timezone.now()
    bank_trade_no = payload.get("bank_trade_no") or ""
    order.transition(Order.Status.SUCCESS, bank_trade_no=bank_trade_no, paid_at=paid_at, next_poll_at=None)
    if payload["method"] == PayMethod.BANK:
        PaymentRecord.objects.update_or_create(
            bank_trade_no=bank_trade_no,
            defaults={
                "out_trade_no": order.out_trade_no, "order_id": order.pk, "amount": order.amount,
                "currency": order.currency, "paid_at": paid_at, "source": payload.get("source", "notify"),
                "outcome": PaymentRecord.Outcome.APPLIED, "reason": "",
            },
        )
    event = order_paid_event(order, fee=payload["fee"], points=payload["points"], notify_url=payload["notify_url"])
    publish(event.TOPIC, event.to_payload(), using="orders")


def pay_cancel(payload: dict, *, xid: str) -> None:
    order = _locked_order(payload["out_trade_no"])
    if order.status == Order.Status.PAYING and order.tcc_xid == xid:
        order.transition(Order.Status.CREATED, tcc_xid="", pay_method="")
    else:  # final already, or never held by this xid: nothing of this try is left to undo
        logger.info("cancel of %s leaves order %s %s", xid, order.out_trade_no, order.status)


def order_paid_event(order: Order, *, fee: int, points: int, notify_url: str) -> OrderPaid:
    return OrderPaid(
        order_id=order.pk, out_trade_no=order.out_trade_no, merchant_id=order.merchant_id,
        merchant_order_no=order.merchant_order_no, payer_id=order.payer_id, amount=order.amount,
        currency=order.currency, fee=fee, bank_trade_no=order.bank_trade_no or None,
        paid_at=order.paid_at.isoformat(), notify_url=notify_url, method=order.pay_method, points_awarded=points,
    )


def register() -> None:
    tcc.participant(ACTION, alias="orders", queue="orders", try_=pay_try, confirm=pay_confirm, cancel=pay_cancel)
