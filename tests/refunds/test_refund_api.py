"""Refunds over the API: ``POST /api/v1/orders/{no}/refunds`` runs the TCC ``refund_order``
(orders, the merchant's funds, the payer's points; a balance payment's refund also credits the
wallet). Phase two and the consumers run in-process (run_phase_two, deliver_all)."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from orders import payments as order_payments
from orders.creation import order_create
from orders.models import Order, Refund
from paysys.core.money import fee_for
from paysys.tcc.models import GlobalTransaction
from tests.concurrency import run_at_once
from tests.phase_two import run_phase_two
from tests.refunds.helpers import (
    fund,
    paid_balance_order,
    paid_bank_order,
    points,
    refund,
    settle,
    top_up_merchant,
)

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture(autouse=True)
def answer_at_decision(monkeypatch):
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)


def test_a_balance_refund_gives_money_and_points_back_at_once(api, merchant, payer):
    order = paid_balance_order(merchant, payer)
    merchant_before, wallet_before, points_before = (
        fund("merchant", merchant.pk),
        fund("payer", payer.pk),
        points(payer),
    )
    assert points_before == (100, 0)

    response = refund(api, "RB-1", "RF-1", 2_500)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "PENDING"  # the answer came at the decision; the confirm lands next
    settle()
    refund_row = Refund.objects.get(merchant_refund_no="RF-1")
    assert refund_row.status == Refund.Status.SUCCEEDED and refund_row.points == 25
    assert fund("merchant", merchant.pk) == (merchant_before[0] - 2_500, 0, 0)
    assert fund("payer", payer.pk) == (wallet_before[0] + 2_500, 0, 0)
    assert points(payer) == (75, 0)
    order.refresh_from_db()
    assert (order.status, order.refunded_amount, order.refunding_amount) == (
        "PARTIALLY_REFUNDED",
        2_500,
        0,
    )
    detail = api.get(f"/api/v1/refunds/{body['refund_no']}").json()
    assert detail["status"] == "SUCCEEDED" and detail["refunded_amount"] == 2_500
    assert api.get("/api/v1/orders/RB-1").json()["refunded_amount"] == 2_500


def test_the_same_request_again_is_a_replay_a_different_one_a_conflict(api, merchant, payer):
    paid_balance_order(merchant, payer)
    first = refund(api, "RB-1", "RF-1", 1_000)
    settle()
    again = refund(api, "RB-1", "RF-1", 1_000)
    other = refund(api, "RB-1", "RF-1", 1_001)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert (
        again.json()["refund_no"] == first.json()["refund_no"]
        and again.json()["status"] == "SUCCEEDED"
    )
    assert (
        other.json()["error"]["code"] == "idempotency_conflict"
        and "amount" in other.json()["error"]["fields"]
    )
    assert Refund.objects.count() == 1 and fund("payer", payer.pk)[0] == 1_000


def test_two_identical_requests_at_once_are_one_refund_one_201_and_one_replay(
    merchant, payer, merchant_and_key
):
    paid_balance_order(merchant, payer)

    def call(amount):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
        return refund(client, "RB-1", "RF-1", amount)

    for round_no in range(3):  # the race is won differently each time: each round must hold
        same = run_at_once(lambda: call(1_000), lambda: call(1_000))
        assert sorted(r.status_code for r in same) == (
            [200, 201] if round_no == 0 else [200, 200]
        ), [r.json() for r in same]
        assert same[0].json()["refund_no"] == same[1].json()["refund_no"]
    different = run_at_once(lambda: call(1_000), lambda: call(2_000))
    assert sorted(r.status_code for r in different) == [200, 409]
    settle()
    assert Refund.objects.count() == 1 and fund("payer", payer.pk)[0] == 1_000


def test_a_fresh_pair_of_identical_requests_racing_is_201_then_200(
    merchant, payer, merchant_and_key
):
    paid_balance_order(merchant, payer, amount=100_000)
    top_up_merchant(merchant, 100_000)

    def call(refund_no):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
        return refund(client, "RB-1", refund_no, 100).status_code

    for i in range(5):
        assert sorted(
            run_at_once(lambda no=f"RF-{i}": call(no), lambda no=f"RF-{i}": call(no))
        ) == [200, 201]
    settle()
    assert Refund.objects.count() == 5 and fund("payer", payer.pk)[0] == 500


def test_concurrent_refunds_that_finish_an_order_take_back_all_its_points(
    merchant, payer, merchant_and_key
):
    # 3333 + 3333 + 3334 of 10000 (100 points): each share rounded down is 33, 99 in all; the
    # refund that is last under the order's lock takes the 34 left, whichever it is
    order = paid_balance_order(merchant, payer)
    top_up_merchant(merchant, fee_for(10_000, merchant.fee_rate_bp))

    def call(refund_no, amount):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
        return refund(client, "RB-1", refund_no, amount).status_code

    codes = run_at_once(
        *[lambda i=i, a=a: call(f"RF-{i}", a) for i, a in enumerate([3_333, 3_333, 3_334])]
    )
    assert codes == [201, 201, 201]
    settle()
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("REFUNDED", 10_000)
    assert sum(Refund.objects.filter(order=order).values_list("points", flat=True)) == 100
    assert points(payer) == (0, 0)


def test_small_refunds_take_back_the_points_their_sum_would(api, merchant, payer):
    # ten refunds of 99 on an order of 1000 (10 points): each alone is under one point's worth,
    # together they are 990 of 1000, so 9 points go back (each refund rounded down alone took 0)
    paid_balance_order(merchant, payer, no="RS-1", amount=1_000)
    assert points(payer) == (10, 0)

    for k in range(10):
        assert refund(api, "RS-1", f"RF-{k}", 99).status_code == 201
        settle()

    # after k refunds, floor(10 * 99k / 1000) = floor(0.99k) points are back
    taken = list(Refund.objects.order_by("id").values_list("points", flat=True))
    assert taken == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1] and points(payer) == (1, 0)
    # and the last 10 take the last point (the fee is kept: the merchant tops its balance up)
    top_up_merchant(merchant, fee_for(1_000, merchant.fee_rate_bp))
    assert refund(api, "RS-1", "RF-last", 10).status_code == 201
    settle()
    assert points(payer) == (0, 0)


def test_full_refund_makes_the_order_refunded_and_nothing_more_can_go_back(api, merchant, payer):
    order = paid_balance_order(merchant, payer)
    fee = fee_for(10_000, merchant.fee_rate_bp)
    top_up_merchant(merchant, fee)  # the fee is kept: a full refund needs its worth more
    assert refund(api, "RB-1", "RF-1", 6_000).status_code == 201
    too_much = refund(api, "RB-1", "RF-2", 4_001)
    assert (
        too_much.status_code == 409
        and too_much.json()["error"]["code"] == "refund_exceeds_refundable"
    )
    assert "4000 left to refund" in too_much.json()["error"]["message"]
    assert refund(api, "RB-1", "RF-3", 4_000).status_code == 201
    settle()
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("REFUNDED", 10_000)
    assert points(payer) == (0, 0)
    assert fund("merchant", merchant.pk) == (0, 0, 0)
    listed = api.get("/api/v1/orders/RB-1/refunds").json()
    assert [r["merchant_refund_no"] for r in listed["results"]] == ["RF-3", "RF-1"]
    first = api.get("/api/v1/orders/RB-1/refunds?limit=1").json()
    second = api.get(f"/api/v1/orders/RB-1/refunds?limit=1&cursor={first['next_cursor']}").json()
    assert [r["merchant_refund_no"] for r in first["results"] + second["results"]] == [
        "RF-3",
        "RF-1",
    ]
    assert second["next_cursor"] is None
    assert api.get("/api/v1/orders/RB-1/refunds?cursor=nope").status_code == 400
    assert api.get("/api/v1/orders/RB-1/refunds?status=x").status_code == 400
    assert refund(api, "RB-1", "RF-4", 1).status_code == 409


def test_a_merchant_who_cannot_cover_it_gets_402_and_nothing_is_frozen(api, merchant, payer):
    paid_balance_order(merchant, payer)  # the merchant has 10000 - fee
    available = fund("merchant", merchant.pk)[0]
    response = refund(api, "RB-1", "RF-1", 10_000)
    assert response.status_code == 402, response.content
    # it says how much is there and how much is missing (the merchant's own figures)
    message = response.json()["error"]["message"]
    assert f"{available} available, {10_000 - available} short" in message
    settle()
    assert fund("merchant", merchant.pk)[1:] == (0, 0)
    assert not Refund.objects.exists()
    assert Order.objects.get(merchant_order_no="RB-1").refunding_amount == 0
    # the same number, a smaller amount, once the merchant can: a new attempt
    assert refund(api, "RB-1", "RF-1", 5_000).status_code == 201


def test_after_a_402_a_smaller_refund_can_be_asked_at_once(api, merchant, payer, settings):
    """Phase two at once, as deployed: the refused refund's cancels run before the 402 is
    answered, so its hold on the order is gone and a smaller refund goes through at once (no
    phase-two pass in between)."""
    settings.TCC_PHASE_TWO_INLINE = True
    paid_balance_order(merchant, payer)

    assert refund(api, "RB-1", "RF-1", 10_000).status_code == 402

    assert Order.objects.get(merchant_order_no="RB-1").refunding_amount == 0
    assert fund("merchant", merchant.pk)[1:] == (0, 0)  # nothing frozen
    assert refund(api, "RB-1", "RF-2", 5_000).status_code == 201


def test_unpaid_other_merchants_and_bad_input(api, merchant, payer, make_merchant):
    order_create(
        merchant=merchant,
        merchant_order_no="U-1",
        amount=100,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    unpaid = refund(api, "U-1", "RF-1", 50)
    assert unpaid.status_code == 409 and unpaid.json()["error"]["code"] == "order_not_refundable"
    other, _ = make_merchant()
    order_create(
        merchant=other,
        merchant_order_no="O-1",
        amount=100,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    assert refund(api, "O-1", "RF-1", 50).status_code == 404
    paid_balance_order(merchant, payer)
    for bad in (
        {"amount": 0},
        {"amount": -5},
        {"amount": "10"},
        {"amount": 1.5},
        {"merchant_refund_no": ""},
        {"merchant_refund_no": "a b"},
        {"merchant_refund_no": "dup-BT1"},
        {"merchant_refund_no": "DUP-x"},
        {"reason": "x" * 256},
        {"extra": 1},
    ):
        body = {"merchant_refund_no": "RF-9", "amount": 10, "reason": "r", **bad}
        response = api.post("/api/v1/orders/RB-1/refunds", body, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert response.json()["error"]["code"]
    assert api.post("/api/v1/orders/RB-1/refunds", [1], format="json").status_code == 400
    assert api.get("/api/v1/refunds/RF-nope").status_code == 404
    assert not Refund.objects.exists()


def test_a_bank_refund_holds_the_money_until_the_bank_answers(api, merchant, payer):
    from orders.refunds import refund_finish

    order = paid_bank_order(merchant, payer)
    balance = fund("merchant", merchant.pk)[0]
    response = refund(api, "R-1", "RF-1", 3_000)
    assert response.status_code == 201 and response.json()["status"] == "PENDING"
    run_phase_two()
    assert fund("merchant", merchant.pk) == (balance, 3_000, 0)  # held, not posted
    assert points(payer) == (100, 30)
    refund_finish(response.json()["refund_no"], succeeded=True)
    settle()
    assert fund("merchant", merchant.pk) == (balance - 3_000, 0, 0)
    assert points(payer) == (70, 0)
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("PARTIALLY_REFUNDED", 3_000)

    second = refund(api, "R-1", "RF-2", 1_000).json()
    run_phase_two()
    refund_finish(second["refund_no"], succeeded=False, failure_reason="account closed")
    settle()
    assert fund("merchant", merchant.pk) == (balance - 3_000, 0, 0)  # released
    assert points(payer) == (70, 0)
    failed = Refund.objects.get(merchant_refund_no="RF-2")
    assert (failed.status, failed.failure_reason) == ("FAILED", "account closed")
    order.refresh_from_db()
    assert (order.refunded_amount, order.refunding_amount) == (3_000, 0)


def test_twenty_concurrent_refunds_give_back_exactly_the_refundable_amount(
    merchant, payer, merchant_and_key
):
    from rest_framework.test import APIClient

    from orders.refunds import refund_finish

    order = paid_bank_order(merchant, payer, amount=10_000)
    top_up_merchant(
        merchant, fee_for(10_000, merchant.fee_rate_bp)
    )  # the merchant can cover all of it
    # 20 x 625 = 12500 asked of a 10000 order: exactly 16 fit, the other 4 are refused (409)

    def call(i):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
        for _ in range(
            20
        ):  # a 503 (a try timed out on a loaded machine) changed nothing: retry, as a client would
            response = refund(client, "R-1", f"C-{i}", 625)
            if response.status_code != 503:
                return response.status_code
            time.sleep(0.2)
        return response.status_code

    codes = run_at_once(*[lambda i=i: call(i) for i in range(20)])
    assert sorted(codes) == [201] * 16 + [409] * 4, codes
    run_phase_two()
    order.refresh_from_db()
    assert order.refunding_amount == 10_000 and fund("merchant", merchant.pk) == (10_000, 10_000, 0)
    for refund_no in Refund.objects.filter(order=order).values_list("refund_no", flat=True):
        refund_finish(refund_no, succeeded=True)
    settle()
    order.refresh_from_db()
    assert (order.status, order.refunded_amount, order.refunding_amount) == ("REFUNDED", 10_000, 0)
    # the k-th refund under the order's lock took floor(100 * 625k / 10000) less what the ones
    # before took (6, 6, 6, 7, ...): all 100 back, and the payer keeps none of the order's points
    taken = list(Refund.objects.filter(order=order).order_by("id").values_list("points", flat=True))
    assert taken == [625 * k // 100 - 625 * (k - 1) // 100 for k in range(1, 17)]
    assert sum(taken) == 100
    assert fund("merchant", merchant.pk) == (0, 0, 0) and points(payer) == (0, 0)
    # (a refusal before the lock starts no transaction; one after it is cancelled)
    assert (
        list(
            GlobalTransaction.objects.filter(name="refund_order", status="CONFIRMED").values_list(
                "status", flat=True
            )
        )
        == ["CONFIRMED"] * 16
    )
    assert not GlobalTransaction.objects.filter(
        name="refund_order", status__in=["TRYING", "CONFIRMING", "CANCELLING"]
    ).exists()


def test_a_pay_call_retried_after_a_refund_is_the_same_200_and_charges_nothing(
    api, merchant, payer, issue_agreement
):
    # given: an order paid from the wallet (the pay call's answer was lost), then half refunded
    from accounts.services import wallet_credit

    wallet_credit(payer_id=payer.pk, amount=10_000, reason="top-up", credited_by="command:test")
    _, token = issue_agreement(payer, merchant)
    order_create(
        merchant=merchant,
        merchant_order_no="RP-1",
        amount=10_000,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    pay = {"method": "balance", "payer_token": token}
    assert api.post("/api/v1/orders/RP-1/pay", pay, format="json").status_code == 200
    run_phase_two()
    assert refund(api, "RP-1", "RF-1", 5_000).status_code == 201
    settle()
    wallet = fund("payer", payer.pk)

    # when: the payer's client retries the pay call
    again = api.post("/api/v1/orders/RP-1/pay", pay, format="json")

    # then: the paid order, as it is now, and nothing charged again
    assert again.status_code == 200, again.content
    assert again.json()["status"] == "PARTIALLY_REFUNDED"
    assert again.json()["refunded_amount"] == 5_000
    assert fund("payer", payer.pk) == wallet
