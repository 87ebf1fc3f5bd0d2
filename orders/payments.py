"""Paying an order: one TCC over orders, funds and points (docs/tcc.md), whose branches
:func:`pay_branches` builds from the contracts in ``paysys.contracts``. A bank payment comes from
the gateway's notify message (``orders.consumers``) or is found by polling the bank
(``orders.polling``): :func:`bank_payments_apply`. A balance payment is the payer's wallet
paying, with the payer's consent: :func:`order_pay_with_balance`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.utils.dateparse import parse_datetime

from orders.models import Order, OrderNotPayable, PaymentRecord, PayMethod
from orders.selectors import order_get, order_notify_url
from paysys import tcc
from paysys.contracts import FundCredit, FundDebit, OrderPayment, PointsAward
from paysys.core.errors import DomainError, Unavailable
from paysys.core.models import Merchant, PayerAgreement
from paysys.core.money import fee_for, points_for
from paysys.core.participants import agreement_branch
from paysys.core.services import agreement_for_payment, agreement_limits_check

logger = logging.getLogger(__name__)

# a balance payment's answer waits this long for the orders confirm to land after the decision
PAY_CONFIRM_WAIT_SECONDS = 2.0

# the TCC global transactions orders runs (declared in OrdersConfig.ready, for /metrics)
COMPLETE_ORDER = "complete_order"  # a bank payment: orders.pay, funds.credit, points.award
PAY_ORDER_BALANCE = "pay_order_balance"  # a balance payment: also funds.debit of the payer's wallet


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
    contracts = [
        OrderPayment(
            **common,
            amount=order.amount,
            method=method,
            bank_trade_no=bank_trade_no,
            paid_at=paid_at,
            source=source,
            fee=fee,
            points=points,
            notify_url=order_notify_url(order, merchant),
        )
    ]
    if method == PayMethod.BALANCE:
        contracts.append(
            FundDebit(**common, owner_type="payer", owner_id=order.payer_id, amount=order.amount)
        )
    if order.amount - fee:
        contracts.append(
            FundCredit(
                **common,
                owner_type="merchant",
                owner_id=order.merchant_id,
                amount=order.amount - fee,
            )
        )
    if points:
        contracts.append(PointsAward(**common, payer_id=order.payer_id, points=points))
    return branches + [tcc.Branch(c.ACTION, c.to_payload()) for c in contracts]


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
    if failed.action == OrderPayment.ACTION and not failed.is_transient:
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
    if order.status in Order.PAID_STATUSES and order.pay_method == PayMethod.BALANCE:
        return order  # a replay of the call that paid it (refunded since, maybe: still paid once)
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
            exc.action == OrderPayment.ACTION
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
