"""TCC branch contracts: the unit rules of paysys/contracts/branches.py. What each participant
does with a payload that does not match is tested with the participant (tests/accounts,
tests/orders, tests/refunds)."""

import pytest

from paysys.contracts import AgreementCharge, FundCredit, FundRefund, OrderPayment, PointsAward
from paysys.core.errors import InvalidInput


def payment(**changes) -> dict:
    return {
        "out_trade_no": "PS1",
        "currency": "CNY",
        "amount": 1999,
        "method": "bank",
        "bank_trade_no": "B-7",
        "paid_at": "2026-11-27T10:00:00+00:00",
        "source": "notify",
        "fee": 12,
        "points": 19,
        "notify_url": "",
        **changes,
    }


def test_version_1_is_the_payload_stored_before_contracts():
    """No "v", and optional fields at their default left out: the same keys, in the same order."""
    credit = FundCredit(
        out_trade_no="PS1", currency="CNY", owner_type="merchant", owner_id=3, amount=1987
    )

    assert list(credit.to_payload().items()) == [
        ("out_trade_no", "PS1"),
        ("currency", "CNY"),
        ("owner_type", "merchant"),
        ("owner_id", 3),
        ("amount", 1987),
    ]
    assert list(OrderPayment.from_payload(payment()).to_payload()) == list(payment())


def test_a_payload_round_trips_with_or_without_v():
    refund = FundRefund(
        out_trade_no="PS1",
        currency="CNY",
        owner_type="merchant",
        owner_id=3,
        amount=500,
        reason="refund RF1",
        settle="later",
    )

    assert FundRefund.from_payload(refund.to_payload()) == refund
    assert FundRefund.from_payload({**refund.to_payload(), "v": 1, "extra": 1}) == refund


def test_an_unknown_version_is_refused():
    with pytest.raises(InvalidInput) as exc:
        OrderPayment.from_payload(payment(v=2))

    assert set(exc.value.fields) == {"v"}


@pytest.mark.parametrize("payload", [None, [], "orders.pay", 7])
def test_a_payload_that_is_not_an_object_is_refused(payload):
    with pytest.raises(InvalidInput, match="payload must be an object"):
        OrderPayment.from_payload(payload)


def test_every_wrong_field_is_named_once():
    wrong = payment(method="card", fee=-1, amount="1999")
    del wrong["notify_url"]

    with pytest.raises(InvalidInput) as exc:
        OrderPayment.from_payload(wrong)

    assert exc.value.fields == {
        "amount": "an integer between 1 and 100000000000 (minor units)",
        "method": "one of bank, balance",
        "fee": "a non-negative integer",
        "notify_url": "is missing",
    }


def test_settle_is_now_or_later():
    with pytest.raises(InvalidInput) as exc:
        FundRefund.from_payload(
            {
                "currency": "CNY",
                "owner_type": "merchant",
                "owner_id": 3,
                "amount": 5,
                "settle": "soon",
            }
        )

    assert set(exc.value.fields) == {"settle"}


def test_zero_points_is_an_award_of_nothing_not_an_error():
    assert PointsAward.from_payload({"payer_id": 5, "points": 0}).points == 0


def test_the_agreement_charge_reads_the_payload_stored_before_contracts_and_writes_it_again():
    # as the agreement's payload was written before it had a contract (dataclasses.asdict, the
    # day as an ISO date): the same keys in the same order, parsed and written back unchanged
    stored = {
        "agreement_id": 4,
        "token_prefix": "a1b2c3d4e5f6",
        "payer_id": 7,
        "merchant_id": 3,
        "amount": 600,
        "currency": "CNY",
        "day": "2026-12-06",
        "out_trade_no": "PS1",
    }

    charge = AgreementCharge.from_payload(stored)

    assert charge.day == "2026-12-06" and charge.amount == 600
    assert list(charge.to_payload().items()) == list(stored.items())
    with pytest.raises(InvalidInput) as exc:
        AgreementCharge.from_payload({**stored, "day": "6/12/2026", "amount": 0})
    assert set(exc.value.fields) == {"day", "amount"}
