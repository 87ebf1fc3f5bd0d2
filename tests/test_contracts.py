"""Message contracts: the unit rules of paysys/contracts/messages.py, and every registered consumer of
every contract failing a non-matching message clearly: SENDING with the error, then DEAD,
nothing applied."""

import dataclasses
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from accounting.models import Voucher
from orders.creation import order_create
from orders.models import Order, PaymentRecord
from paysys import contracts
from paysys.contracts import BankPaymentSucceeded, Contract, ContractError, OrderPaid
from paysys.messaging import publish, registry, relay
from paysys.messaging.models import InboxEntry, Message
from tests.accounting.factories import order_paid_payload
from tests.messaging.helpers import Raw, ShipRecorder, deliver_all


def bank_payment_payload(**changes) -> dict:
    event = BankPaymentSucceeded(
        bank_trade_no="B-1",
        out_trade_no="PS1",
        amount=1234,
        currency="CNY",
        paid_at="2026-11-27T10:00:00+00:00",
    )
    return {**event.to_payload(), **changes}


# --- from_payload / to_payload ----------------------------------------------------------------


def test_a_payload_round_trips_and_carries_its_version():
    event = OrderPaid.from_payload(order_paid_payload())

    assert event.to_payload()["v"] == OrderPaid.VERSION == 1
    assert OrderPaid.from_payload(event.to_payload()) == event


def test_a_payload_without_v_is_version_1():
    payload = bank_payment_payload()
    del payload["v"]

    assert BankPaymentSucceeded.from_payload(payload) == BankPaymentSucceeded.from_payload(
        bank_payment_payload()
    )


def test_unknown_keys_are_ignored():
    """A producer may add an optional field before its consumers know it."""
    event = BankPaymentSucceeded.from_payload(bank_payment_payload(channel="card", extra={"a": 1}))

    assert event.amount == 1234
    assert not hasattr(event, "channel")


def test_optional_fields_take_their_defaults():
    payload = order_paid_payload(method=..., points_awarded=..., notify_url=...)

    event = OrderPaid.from_payload(payload)

    assert (event.method, event.points_awarded, event.notify_url) == ("bank", 0, "")


@pytest.mark.parametrize(
    "changes,problem",
    [
        ({"amount": ...}, "amount is missing"),
        ({"amount": "1234"}, "amount must be int, got '1234'"),
        ({"amount": 12.5}, "amount must be int, got 12.5"),
        ({"amount": True}, "amount must be int, got True"),  # a bool is no amount
        ({"currency": None}, "currency must be str, got None"),
        ({"v": 2}, "version 2 is not one of [1]"),
        ({"v": "1"}, "version '1' is not one of [1]"),
        ({"amount": 0}, "amount must be positive"),
    ],
)
def test_a_payload_that_does_not_match_raises_contract_error(changes, problem):
    payload = {k: v for k, v in bank_payment_payload(**changes).items() if v is not ...}

    with pytest.raises(ContractError) as refused:
        BankPaymentSucceeded.from_payload(payload)

    assert problem in str(refused.value)
    assert BankPaymentSucceeded.TOPIC in str(refused.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(ContractError, match="bank_trade_no is missing; amount must be int"):
        BankPaymentSucceeded.from_payload(
            {"out_trade_no": "PS1", "amount": "x", "currency": "CNY", "paid_at": "t"}
        )


@pytest.mark.parametrize("payload", [None, [], "order.paid", 7])
def test_a_payload_that_is_not_an_object_raises_contract_error(payload):
    with pytest.raises(ContractError, match="payload must be an object"):
        OrderPaid.from_payload(payload)


def test_a_nullable_field_takes_null_but_no_other_type():
    assert OrderPaid.from_payload(order_paid_payload(bank_trade_no=None)).bank_trade_no is None
    with pytest.raises(ContractError, match="bank_trade_no must be str or null, got 5"):
        OrderPaid.from_payload(order_paid_payload(bank_trade_no=5))


def test_every_contract_has_its_own_topic():
    every = [
        c
        for c in vars(contracts).values()
        if isinstance(c, type) and issubclass(c, Contract) and c is not Contract
    ]
    topics = [c.TOPIC for c in every]
    assert len(topics) == len(set(topics)) >= 3
    assert all(dataclasses.is_dataclass(c) and c.VERSION in c.ACCEPTS for c in every)


# --- consumers: a message that does not match its contract ------------------------------------


@pytest.fixture
def order(merchant, payer):
    order, _ = order_create(
        merchant=merchant,
        merchant_order_no="C-1",
        amount=1234,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )
    return order


def nothing_applied(order) -> bool:
    """No consumer wrote anything: no inbox row anywhere, no payment record, no voucher."""
    order.refresh_from_db()
    return (
        not any(
            InboxEntry.objects.using(alias).exists()
            for alias in ("default", "orders", "accounting")
        )
        and not PaymentRecord.objects.exists()
        and order.status == Order.Status.CREATED
        and not Voucher.objects.using("accounting").exists()
    )


BAD = {
    "missing field": ({"amount": ...}, "amount is missing"),
    "wrong type": ({"amount": "1234"}, "amount must be int"),
    "unknown version": ({"v": 2}, "version 2 is not one of [1]"),
}
CASES = [
    (contract, alias, name)
    for contract, alias in [(BankPaymentSucceeded, "default"), (OrderPaid, "orders")]
    for name in BAD
]


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize("contract,alias,case", CASES, ids=[f"{c.TOPIC}-{n}" for c, _, n in CASES])
def test_a_consumer_fails_a_non_matching_message_clearly_and_applies_nothing(
    contract, alias, case, order, settings, monkeypatch
):
    """Given a payload that breaks its contract (a buggy producer, a version not deployed here
    yet), every consumer refuses it: the message stays SENDING with the contract's complaint,
    goes DEAD when the resend schedule runs out, and nothing of it is applied."""
    monkeypatch.setattr(relay, "_ship", ShipRecorder())
    settings.MESSAGE_RESEND_SCHEDULE = [0, 1]
    changes, problem = BAD[case]
    good = (
        bank_payment_payload(out_trade_no=order.out_trade_no)
        if contract is BankPaymentSucceeded
        else order_paid_payload()
    )
    payload = {k: v for k, v in {**good, **changes}.items() if v is not ...}
    with transaction.atomic(using=alias):
        publish(Raw(contract.TOPIC, payload), using=alias)
    consumers = registry.consumers_of(contract.TOPIC)
    assert consumers

    result = deliver_all(alias, topic=contract.TOPIC)

    assert result["acked"] == [] and len(result["failed"]) == len(consumers)
    for message in Message.objects.using(alias).filter(topic=contract.TOPIC):
        assert message.status == Message.Status.SENDING
        assert problem in message.last_error and contract.TOPIC in message.last_error
    assert nothing_applied(order)

    # the resend schedule runs out: every send fails the same way, then the message is DEAD
    later = timezone.now()
    for _ in settings.MESSAGE_RESEND_SCHEDULE:
        later += timedelta(seconds=60)
        relay.relay_due(alias, now=later)
        deliver_all(alias, topic=contract.TOPIC)
    relay.relay_due(alias, now=later + timedelta(seconds=60))

    assert set(
        Message.objects.using(alias).filter(topic=contract.TOPIC).values_list("status", flat=True)
    ) == {"DEAD"}
    assert nothing_applied(order)
