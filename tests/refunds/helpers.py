"""Refund test helpers: paid orders (bank and balance), and what the workers would do."""

from __future__ import annotations

from accounts.selectors import fund_account_get, points_account_get
from accounts.services import wallet_credit
from orders.creation import order_create
from orders.payments import bank_payment_apply, order_pay_with_balance
from paysys.contracts import RefundFinished
from paysys.core.services import agreement_issue
from tests.messaging.helpers import deliver_all
from tests.phase_two import run_phase_two


def paid_bank_order(merchant, payer, no="R-1", amount=10_000):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no=no,
        amount=amount,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    bank_payment_apply(
        out_trade_no=order.out_trade_no,
        bank_trade_no=f"B-{no}",
        amount=amount,
        currency="CNY",
        paid_at="2026-12-01T10:00:00+00:00",
        source="notify",
    )
    run_phase_two()
    order.refresh_from_db()
    return order


def paid_balance_order(merchant, payer, no="RB-1", amount=10_000):
    wallet_credit(payer_id=payer.pk, amount=amount, reason="top-up", credited_by="command:test")
    _, token = agreement_issue(payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:test")
    order_create(
        merchant=merchant,
        merchant_order_no=no,
        amount=amount,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    order = order_pay_with_balance(merchant=merchant, merchant_order_no=no, payer_token=token)
    run_phase_two()
    order.refresh_from_db()
    return order


def fund(owner_type, owner_id):
    account = fund_account_get(owner_type=owner_type, owner_id=owner_id, currency="CNY")
    return (account.balance, account.frozen, account.pending_in) if account else (0, 0, 0)


def points(payer):
    account = points_account_get(payer_id=payer.pk)
    return (account.balance, account.frozen) if account else (0, 0)


def settle():
    """Phase two, then every service's consumers of refund.finished."""
    run_phase_two()
    for alias in ("orders",):
        deliver_all(alias, topic=RefundFinished.TOPIC)


def refund(api, no, refund_no, amount, reason="customer cancelled", **extra):
    body = {"merchant_refund_no": refund_no, "amount": amount, "reason": reason}
    return api.post(f"/api/v1/orders/{no}/refunds", {**body, **extra}, format="json")


def top_up_merchant(merchant, amount):
    """Credit the merchant's fund account (as a payment's confirm would): a refund of a whole order
    needs the fee's worth more than the payment brought, the fee being kept."""
    from django.db import transaction

    from accounts.services import fund_credit_hold, fund_credit_post
    from paysys.contracts import FundMove

    move = FundMove(owner_type="merchant", owner_id=merchant.pk, amount=amount, currency="CNY")
    with transaction.atomic(using="funds"):
        fund_credit_hold(moves=[(f"top-up-{merchant.pk}", move)])
        fund_credit_post(moves=[(f"top-up-{merchant.pk}", move)])
