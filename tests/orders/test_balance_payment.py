"""Balance payment: ``POST /api/v1/orders/{merchant_order_no}/pay`` runs a TCC over orders (the
order), funds (payer debit, merchant credit of amount - fee) and points (payer award).

In-process: the tries run here; phase two, which the participants' workers run in production,
is run with ``run_phase_two()`` (tests/faults runs it in real workers)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import FundAccount, FundEntry, PointsAccount
from accounts.selectors import fund_account_get, points_account_get
from accounts.services import wallet_credit
from orders import payments as order_payments
from orders.creation import order_create
from orders.models import Order
from paysys.core.models import PayerAgreementDay
from paysys.core.money import fee_for, points_for
from paysys.core.services import agreement_reissue, agreement_revoke
from paysys.messaging.models import Message
from paysys.tcc.models import Barrier, GlobalTransaction
from tests.concurrency import run_at_once
from tests.orders.helpers import order_paid_payloads
from tests.phase_two import run_phase_two
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

AMOUNT = 1234


@pytest.fixture(autouse=True)
def answer_at_decision(monkeypatch):
    """Nobody runs phase two while the API would wait for it here: answer at the decision."""
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)


@pytest.fixture
def payer_token(payer, merchant, issue_agreement):
    """The payer's agreement with ``merchant`` (no limits): its token."""
    return issue_agreement(payer, merchant)[1]


@pytest.fixture
def wallet(payer):
    """The payer's wallet, credited by hand with 100.00."""
    wallet_credit(payer_id=payer.pk, amount=10_000, reason="top-up", credited_by="command:test")
    return payer


def make_order(merchant, payer, no="BAL-1", amount=AMOUNT):
    return order_create(
        merchant=merchant,
        merchant_order_no=no,
        amount=amount,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]


def pay(api, no, token, **extra):
    return api.post(
        f"/api/v1/orders/{no}/pay",
        {"method": "balance", "payer_token": token, **extra},
        format="json",
    )


def available(owner_type, owner_id):
    account = fund_account_get(owner_type=owner_type, owner_id=owner_id, currency="CNY")
    return (account.balance, account.frozen, account.pending_in) if account else (0, 0, 0)


def points(payer):
    account = points_account_get(payer_id=payer.pk)
    return (account.balance, account.pending) if account else (0, 0)


def test_paying_from_the_wallet_moves_order_wallet_merchant_and_points_together(
    api, merchant, payer, wallet, payer_token
):
    order = make_order(merchant, payer)
    fee = fee_for(AMOUNT, merchant.fee_rate_bp)

    response = pay(api, "BAL-1", payer_token)

    assert response.status_code == 200, response.content
    assert response.json()["merchant_order_no"] == "BAL-1"
    # the decision is committed: the wallet's amount is frozen, the merchant's credit pending
    assert Order.objects.get(pk=order.pk).status == "PAYING"
    assert available("payer", payer.pk) == (10_000, AMOUNT, 0)
    assert available("merchant", merchant.pk) == (0, 0, AMOUNT - fee)

    run_phase_two()  # phase two, as the orders, funds and points workers run it

    order.refresh_from_db()
    assert (order.status, order.pay_method, order.bank_trade_no) == ("SUCCESS", "balance", "")
    assert available("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)
    assert available("merchant", merchant.pk) == (AMOUNT - fee, 0, 0)
    assert points(payer) == (points_for(AMOUNT, "CNY"), 0) == (12, 0)
    [paid] = order_paid_payloads(order)
    assert (paid["method"], paid["points_awarded"], paid["fee"], paid["bank_trade_no"]) == (
        "balance",
        12,
        fee,
        None,
    )
    assert api.get("/api/v1/orders/BAL-1").json()["status"] == "SUCCESS"
    gtx = GlobalTransaction.objects.get(business_key=f"balance:{order.out_trade_no}")
    assert gtx.status == "CONFIRMED"
    assert set(gtx.branches.values_list("status", flat=True)) == {"CONFIRMED"}
    # the agreement has nothing to confirm (its try counted the payment): confirmed without a
    # transaction of its own, so without a barrier row
    assert not Barrier.objects.filter(xid=gtx.xid, op="confirm").exists()


def test_the_answer_waits_for_the_order_confirm(
    api, merchant, payer, wallet, payer_token, monkeypatch
):
    """With the orders worker running (here: a thread running phase two), the 200 carries SUCCESS."""
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 10)
    make_order(merchant, payer)
    stop = threading.Event()

    def worker():
        try:
            while not stop.is_set():
                run_phase_two()
                stop.wait(0.05)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        response = pay(api, "BAL-1", payer_token)
    finally:
        stop.set()
        thread.join()

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["pay_method"]) == ("SUCCESS", "balance")


def test_insufficient_balance_is_402_and_nothing_changes(api, merchant, payer, wallet, payer_token):
    order = make_order(merchant, payer, amount=10_001)

    response = pay(api, "BAL-1", payer_token)

    assert response.status_code == 402, response.content
    assert response.json()["error"]["code"] == "insufficient_funds"
    run_phase_two()  # the cancels
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000, 0, 0)
    assert available("merchant", merchant.pk) == (0, 0, 0)
    assert points(payer) == (0, 0)
    assert order_paid_payloads(order) == []
    assert (
        GlobalTransaction.objects.get(business_key=f"balance:{order.out_trade_no}").status
        == "CANCELLED"
    )


def test_a_payer_without_a_wallet_is_402(api, merchant, payer, payer_token):
    make_order(merchant, payer)

    assert pay(api, "BAL-1", payer_token).status_code == 402


def test_after_a_402_the_topped_up_wallet_pays_the_same_order(
    api, merchant, payer, wallet, payer_token
):
    order = make_order(merchant, payer, amount=15_000)
    assert pay(api, "BAL-1", payer_token).status_code == 402
    run_phase_two()
    wallet_credit(payer_id=payer.pk, amount=5_000, reason="more", credited_by="command:test")

    assert pay(api, "BAL-1", payer_token).status_code == 200
    run_phase_two()

    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert available("payer", payer.pk) == (0, 0, 0)
    attempts = GlobalTransaction.objects.filter(
        business_key=f"balance:{order.out_trade_no}"
    ).order_by("attempt")
    assert [(t.attempt, t.status) for t in attempts] == [(1, "CANCELLED"), (2, "CONFIRMED")]


def test_with_phase_two_at_once_the_topped_up_wallet_pays_right_after_a_402(
    api, merchant, payer, wallet, payer_token, settings
):
    """As deployed (TCC_PHASE_TWO_INLINE): the refused attempt's cancels ran before the 402, so
    the order is payable again at once: no 503 while a worker releases it."""
    settings.TCC_PHASE_TWO_INLINE = True
    order = make_order(merchant, payer, amount=15_000)
    assert pay(api, "BAL-1", payer_token).status_code == 402
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000, 0, 0)  # nothing frozen
    wallet_credit(payer_id=payer.pk, amount=5_000, reason="more", credited_by="command:test")

    assert pay(api, "BAL-1", payer_token).status_code == 200
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"


def test_a_retry_while_the_cancelled_attempt_still_holds_the_order_is_503_not_409(
    api, merchant, payer, wallet, payer_token
):
    """Right after a 402 the order is PAYING until the orders worker runs the cancel (here: phase
    two left to the workers, as when a database does not answer): a retry then is told to retry
    (503), not that the order cannot be paid."""
    order = make_order(merchant, payer, amount=15_000)
    assert pay(api, "BAL-1", payer_token).status_code == 402
    assert Order.objects.get(pk=order.pk).status == "PAYING"  # the cancel is on its way

    retry = pay(api, "BAL-1", payer_token)

    assert retry.status_code == 503 and retry["Retry-After"]
    run_phase_two()
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000, 0, 0)


@pytest.mark.parametrize("token", ["ppt_not-the-token", ""])
def test_a_token_that_is_not_the_payers_is_403_or_400_and_nothing_runs(
    api, merchant, payer, wallet, payer_token, token
):
    order = make_order(merchant, payer)

    response = pay(api, "BAL-1", token)

    assert response.status_code == (403 if token else 400), response.content
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert not GlobalTransaction.objects.exists()


def test_another_payers_token_is_403(api, merchant, payer, wallet, make_payer_with_token):
    make_order(merchant, payer)
    _, other_token = make_payer_with_token()

    response = pay(api, "BAL-1", other_token)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "payer_token_mismatch"


def test_another_merchants_order_is_404(api, payer, wallet, payer_token, make_merchant):
    other, _ = make_merchant()
    make_order(other, payer)

    assert pay(api, "BAL-1", payer_token).status_code == 404
    assert pay(api, "NO-SUCH", payer_token).status_code == 404


@pytest.mark.parametrize("status,method", [("CLOSED", ""), ("FAILED", ""), ("PAYING", "bank")])
def test_an_order_that_is_not_payable_is_409(
    api, merchant, payer, wallet, payer_token, status, method
):
    order = make_order(merchant, payer)
    force_status(Order.objects.filter(pk=order.pk), status=status, pay_method=method)

    response = pay(api, "BAL-1", payer_token)

    assert response.status_code == 409
    assert available("payer", payer.pk) == (10_000, 0, 0)


def test_an_order_paid_at_the_bank_is_409_and_paying_it_again_from_the_wallet_is_200_once(
    api, merchant, payer, wallet, payer_token
):
    bank_paid = make_order(merchant, payer, no="BANK-PAID")
    force_status(
        Order.objects.filter(pk=bank_paid.pk),
        status="SUCCESS",
        pay_method="bank",
        bank_trade_no="B1",
    )
    assert pay(api, "BANK-PAID", payer_token).status_code == 409

    make_order(merchant, payer)
    assert pay(api, "BAL-1", payer_token).status_code == 200
    run_phase_two()
    replay = pay(api, "BAL-1", payer_token)  # a retry after a lost answer: paid once, same answer

    assert replay.status_code == 200 and replay.json()["status"] == "SUCCESS"
    assert available("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)


def test_a_retry_while_the_payment_is_in_phase_two_gets_the_same_200(
    api, merchant, payer, wallet, payer_token
):
    """The first call's answer was lost after the decision; the retry finds the decided
    transaction of the same key instead of a 409 for the PAYING order, and charges nothing more."""
    order = make_order(merchant, payer)
    assert pay(api, "BAL-1", payer_token).status_code == 200
    assert Order.objects.get(pk=order.pk).status == "PAYING"

    retry = pay(api, "BAL-1", payer_token)
    run_phase_two()

    assert retry.status_code == 200
    assert GlobalTransaction.objects.count() == 1
    assert available("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)


@pytest.mark.parametrize(
    "body",
    [
        {"method": "balance"},
        {"method": "card", "payer_token": "x"},
        {"method": "balance", "payer_token": 5},
        {"method": "balance", "payer_token": "x", "amount": 1},
        [],
        "balance",
    ],
)
def test_bad_bodies_are_400(api, merchant, payer, payer_token, body):
    make_order(merchant, payer)

    response = api.post("/api/v1/orders/BAL-1/pay", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"


def test_unknown_fields_are_named(api, merchant, payer, payer_token):
    make_order(merchant, payer)

    response = pay(api, "BAL-1", payer_token, tip=100)

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"tip": "unknown field"}


def test_a_service_down_during_the_tries_is_503_with_retry_after_and_nothing_changes(
    api, merchant, payer, wallet, payer_token, monkeypatch
):
    """points.award's try cannot reach its database (a stand-in here for the real fault in
    tests/faults/test_tcc_faults.py): cancel, 503, nothing moved."""
    from django.db import OperationalError

    from accounts import services as accounts_services

    order = make_order(merchant, payer)

    def unreachable(**kwargs):
        raise OperationalError(2003, "Can't connect to MySQL server")

    monkeypatch.setattr(accounts_services, "points_award_hold", unreachable)

    response = pay(api, "BAL-1", payer_token)

    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"]["code"] == "service_unavailable"
    run_phase_two()
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000, 0, 0)
    assert available("merchant", merchant.pk) == (0, 0, 0)
    assert points(payer) == (0, 0)


def test_concurrent_calls_for_one_order_pay_it_once(api, merchant, payer, wallet, payer_token):
    order = make_order(merchant, payer)

    responses = run_at_once(*[lambda: pay(api, "BAL-1", payer_token) for _ in range(6)])
    run_phase_two()

    # every call gets the same answer: it began, resumed or found decided the one transaction
    assert [r.status_code for r in responses] == [200] * 6
    assert Order.objects.get(pk=order.pk).status == "SUCCESS"
    assert available("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)
    assert available("merchant", merchant.pk)[0] == AMOUNT - fee_for(AMOUNT, merchant.fee_rate_bp)
    assert (
        FundEntry.objects.filter(
            account__owner_type="payer", kind="posted", direction="debit"
        ).count()
        == 1
    )
    assert GlobalTransaction.objects.filter(status="CONFIRMED").count() == 1
    assert len(order_paid_payloads(order)) == 1


def test_a_bank_payment_and_a_balance_payment_racing_pay_the_order_once(
    api, merchant, payer, wallet, payer_token
):
    """The orders try serialises them: whichever holds the order first pays; the other is
    refused (the wallet's call: 503 or 409; the bank payment is retried, and flagged once the
    order is paid)."""
    from orders.payments import PaymentNotCompleted, bank_payment_apply

    order = make_order(merchant, payer)

    def bank():
        try:
            return bank_payment_apply(
                out_trade_no=order.out_trade_no,
                bank_trade_no="B-RACE",
                amount=AMOUNT,
                currency="CNY",
                paid_at="2026-11-27T10:00:00+00:00",
                source="notify",
            )
        except PaymentNotCompleted:
            return "retry later"

    balance, bank_outcome = run_at_once(lambda: pay(api, "BAL-1", payer_token), bank)
    run_phase_two()

    order.refresh_from_db()
    assert order.status == "SUCCESS"
    assert len(order_paid_payloads(order)) == 1
    if order.pay_method == "balance":
        assert balance.status_code == 200 and bank_outcome in ("FLAGGED", "retry later")
        assert available("payer", payer.pk)[0] == 10_000 - AMOUNT
    else:
        # refused by the order's try while the bank payment held it (503: retry), or after (409)
        assert balance.status_code in (409, 503) and bank_outcome == "APPLIED"
        assert available("payer", payer.pk)[0] == 10_000
    assert FundAccount.objects.get(owner_type="merchant").balance == AMOUNT - fee_for(
        AMOUNT, merchant.fee_rate_bp
    )
    assert PointsAccount.objects.get(payer_id=payer.pk).balance == 12
    assert (
        Message.objects.using("orders")
        .filter(topic="order.paid")
        .values("message_id")
        .distinct()
        .count()
        == 1
    )


# --- the payer's agreement: one merchant, limits, revocable, re-issuable --------------------


def used_today(agreement) -> int:
    return (
        PayerAgreementDay.objects.filter(agreement=agreement, day=PayerAgreementDay.today())
        .values_list("amount", flat=True)
        .first()
        or 0
    )


def assert_nothing_charged(order, payer):
    """The refused payment held no order, froze nothing and moved nothing (phase two run)."""
    run_phase_two()
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000, 0, 0)
    assert not FundEntry.objects.filter(account__owner_type="payer", kind="hold").exists()
    assert points(payer) == (0, 0)


def refusal(response) -> str:
    assert response.status_code == 403, response.content
    return response.json()["error"]["code"]


def test_a_token_used_by_another_merchant_is_403_and_nothing_is_written(
    merchant, payer, wallet, make_merchant, issue_agreement
):
    """Merchant B saw the payer's token for merchant A: B cannot charge the wallet with it."""
    _, token_for_merchant = issue_agreement(payer, merchant)
    other, other_key = make_merchant()
    order = make_order(other, payer)
    other_api = APIClient()
    other_api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")

    response = pay(other_api, "BAL-1", token_for_merchant)

    assert refusal(response) == "agreement_other_merchant"
    assert "another merchant" in response.json()["error"]["message"]
    assert not GlobalTransaction.objects.exists()
    assert_nothing_charged(order, payer)


def test_a_revoked_agreement_is_403_and_nothing_is_written(
    api, merchant, payer, wallet, issue_agreement
):
    agreement, token = issue_agreement(payer, merchant)
    order = make_order(merchant, payer)
    agreement_revoke(agreement_id=agreement.pk, revoked_by="admin:boss")

    response = pay(api, "BAL-1", token)

    assert refusal(response) == "agreement_revoked"
    assert not GlobalTransaction.objects.exists()
    assert_nothing_charged(order, payer)


def test_a_payment_over_the_per_payment_limit_is_403_and_nothing_is_written(
    api, merchant, payer, wallet, issue_agreement
):
    _, token = issue_agreement(payer, merchant, per_payment_limit=AMOUNT - 1)
    order = make_order(merchant, payer)

    response = pay(api, "BAL-1", token)

    assert refusal(response) == "agreement_payment_limit"
    assert str(AMOUNT - 1) in response.json()["error"]["message"]
    assert not GlobalTransaction.objects.exists()
    assert_nothing_charged(order, payer)
    make_order(merchant, payer, no="BAL-2", amount=AMOUNT - 1)
    assert pay(api, "BAL-2", token).status_code == 200  # at the limit: paid


def test_payments_over_the_daily_limit_are_403_and_nothing_is_written(
    api, merchant, payer, wallet, issue_agreement
):
    agreement, token = issue_agreement(payer, merchant, daily_limit=2 * AMOUNT)
    make_order(merchant, payer, no="BAL-1")
    make_order(merchant, payer, no="BAL-2")
    third = make_order(merchant, payer, no="BAL-3")
    assert pay(api, "BAL-1", token).status_code == 200
    assert pay(api, "BAL-2", token).status_code == 200  # the limit reached exactly
    run_phase_two()
    transactions = GlobalTransaction.objects.count()

    response = pay(api, "BAL-3", token)

    assert refusal(response) == "agreement_daily_limit"
    assert GlobalTransaction.objects.count() == transactions
    assert Order.objects.get(pk=third.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000 - 2 * AMOUNT, 0, 0)
    assert used_today(agreement) == 2 * AMOUNT


def test_the_agreements_try_refuses_what_the_check_before_it_let_through(
    api, merchant, payer, wallet, issue_agreement, monkeypatch
):
    """The check before the TCC reads without a lock; the limit holds because the agreement's try
    counts under the row lock. With that check skipped, the try alone refuses: 403, cancelled,
    the order never held, the wallet never frozen."""
    agreement, token = issue_agreement(payer, merchant, daily_limit=AMOUNT)
    make_order(merchant, payer, no="BAL-1")
    order = make_order(merchant, payer, no="BAL-2")
    assert pay(api, "BAL-1", token).status_code == 200
    run_phase_two()
    monkeypatch.setattr(order_payments, "agreement_limits_check", lambda *args, **kwargs: None)

    response = pay(api, "BAL-2", token)

    assert refusal(response) == "agreement_daily_limit"
    gtx = GlobalTransaction.objects.get(business_key=f"balance:{order.out_trade_no}")
    assert gtx.branches.get(action="core.agreement").status == "TRY_FAILED"
    run_phase_two()
    gtx.refresh_from_db()
    assert gtx.status == "CANCELLED"
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert available("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)
    assert (
        used_today(agreement) == AMOUNT
    )  # the refused try counted nothing, its (empty) cancel uncounted nothing


def test_concurrent_payments_with_one_agreement_never_pass_its_daily_limit(
    api, merchant, payer, wallet, issue_agreement
):
    """Six orders paid at once under one agreement whose daily limit covers three: exactly three
    are paid; the others are refused (before the TCC or by the agreement's try), nothing frozen."""
    agreement, token = issue_agreement(payer, merchant, daily_limit=3 * AMOUNT)
    numbers = [f"RACE-{n}" for n in range(6)]
    for no in numbers:
        make_order(merchant, payer, no=no)

    responses = run_at_once(*[lambda no=no: pay(api, no, token) for no in numbers])
    run_phase_two()

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [403] * 3, [r.content for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 403} == {
        "agreement_daily_limit"
    }
    assert Order.objects.filter(merchant_order_no__in=numbers, status="SUCCESS").count() == 3
    assert Order.objects.filter(merchant_order_no__in=numbers, status="CREATED").count() == 3
    assert available("payer", payer.pk) == (10_000 - 3 * AMOUNT, 0, 0)
    assert used_today(agreement) == 3 * AMOUNT


def test_a_cancelled_payment_gives_its_amount_back_to_the_daily_limit(
    api, merchant, payer, wallet, issue_agreement
):
    """The agreement's try counts the payment; when a later try refuses (the wallet cannot
    afford it: 402), the cancel uncounts it, and the day's limit is whole again."""
    agreement, token = issue_agreement(payer, merchant, daily_limit=12_000)
    make_order(merchant, payer, no="BIG", amount=11_000)
    make_order(merchant, payer, no="SMALL", amount=AMOUNT)

    assert pay(api, "BIG", token).status_code == 402
    assert used_today(agreement) == 11_000  # counted by the try; the cancel is on its way
    run_phase_two()
    assert used_today(agreement) == 0

    assert pay(api, "SMALL", token).status_code == 200
    run_phase_two()
    assert used_today(agreement) == AMOUNT
    assert available("payer", payer.pk) == (10_000 - AMOUNT, 0, 0)


def test_a_reissued_token_replaces_the_old_one(api, merchant, payer, wallet, issue_agreement):
    agreement, old = issue_agreement(payer, merchant)
    order = make_order(merchant, payer)
    _, new = agreement_reissue(agreement_id=agreement.pk, issued_by="admin:boss")

    assert refusal(pay(api, "BAL-1", old)) == "payer_token_mismatch"
    assert_nothing_charged(order, payer)
    assert pay(api, "BAL-1", new).status_code == 200


def test_a_token_reissued_after_the_check_is_refused_by_the_try(
    api, merchant, payer, wallet, issue_agreement, monkeypatch
):
    """Reissued (or revoked) between the check and the try: the try, under the agreement's lock, refuses."""
    agreement, token = issue_agreement(payer, merchant)
    order = make_order(merchant, payer)
    check = order_payments.agreement_limits_check

    def reissue_meanwhile(*args, **kwargs):
        check(*args, **kwargs)
        agreement_reissue(agreement_id=agreement.pk, issued_by="admin:boss")

    monkeypatch.setattr(order_payments, "agreement_limits_check", reissue_meanwhile)

    assert refusal(pay(api, "BAL-1", token)) == "payer_token_mismatch"
    assert_nothing_charged(order, payer)


# --- expiry ----------------------------------------------------------------------------------


def test_an_expired_order_not_yet_closed_is_409_and_nothing_is_charged(
    api, merchant, payer, wallet, payer_token
):
    order = make_order(merchant, payer)
    Order.objects.filter(pk=order.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )  # the expiry pass has not run

    response = pay(api, "BAL-1", payer_token)

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "order_expired"
    assert "expired at" in response.json()["error"]["message"]
    assert_nothing_charged(order, payer)


def test_the_openapi_schema_says_exactly_what_the_endpoint_does(client):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    operation = schema["paths"]["/api/v1/orders/{merchant_order_no}/pay"]["post"]

    assert sorted(operation["responses"]) == [
        "200",
        "400",
        "401",
        "402",
        "403",
        "404",
        "405",
        "406",
        "409",
        "413",
        "415",
        "429",
        "503",
    ]
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    body = schema["components"]["schemas"][
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert body["required"] == ["method", "payer_token"] and body["additionalProperties"] is False
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OrderOutput"
    )
