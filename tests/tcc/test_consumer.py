"""A TCC run from a message consumer: the consumer is non-atomic (``consumer(..., atomic=False)``),
so tries and the decision commit on their own, and the message is acknowledged only once the
confirm decision is committed."""

from __future__ import annotations

import itertools

import pytest
from django.db import connections, transaction

from paysys import tcc
from paysys.messaging import publish, registry
from paysys.messaging.models import InboxEntry, Message
from paysys.tcc.models import GlobalTransaction
from tests.messaging.helpers import Raw, deliver_all, force_status
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

TOPIC = "test.tcc_pay"
CONSUMER = "orders.test_tcc_pay"
seen: list[bool] = []
refusing = {"points": False}
_keys = itertools.count(1)


@registry.consumer(TOPIC, queue="orders", name=CONSUMER, atomic=False)
def pay(message) -> None:
    seen.append(connections["orders"].in_atomic_block)
    tcc.run(
        "complete_order",
        business_key=message.payload["key"],
        branches=[
            tcc.Branch("test.orders", {"amount": 1}),
            tcc.Branch("test.points", {"amount": 10, "refuse": refusing["points"]}),
        ],
    )


@pytest.fixture
def message_key(ledgers):
    seen.clear()
    key = f"bank:T{next(_keys)}:{id(seen)}"
    with transaction.atomic(using="default"):
        publish(Raw(TOPIC, {"key": key}), using="default")
    yield key
    refusing["points"] = False


def message(key: str) -> Message:
    return Message.objects.get(topic=TOPIC, payload__key=key)


def test_the_handler_runs_outside_any_transaction_and_is_acknowledged_after_the_decision(
    message_key,
):
    result = deliver_all("default", topic=TOPIC, payload__key=message_key)

    assert result["acked"] == [message(message_key).id] and seen == [False]
    assert message(message_key).status == Message.Status.CONSUMED
    assert (
        InboxEntry.objects.using("orders")
        .filter(consumer=CONSUMER, message_id=message(message_key).message_id)
        .exists()
    )
    assert (
        GlobalTransaction.objects.get(business_key=message_key).status
        == GlobalTransaction.Status.CONFIRMING
    )


def test_a_failed_try_leaves_the_message_unacknowledged_and_a_redelivery_completes_it(message_key):
    refusing["points"] = True
    result = deliver_all("default", topic=TOPIC, payload__key=message_key)
    assert result["failed"] == [message(message_key).id]
    assert (
        message(message_key).status == Message.Status.SENDING
        and "TryFailed" in message(message_key).last_error
    )
    assert (
        not InboxEntry.objects.using("orders")
        .filter(consumer=CONSUMER)
        .filter(message_id=message(message_key).message_id)
        .exists()
    )
    run_phase_two()

    refusing["points"] = False
    deliver_all("default", topic=TOPIC, payload__key=message_key)  # the resend
    assert message(message_key).status == Message.Status.CONSUMED
    attempts = GlobalTransaction.objects.filter(business_key=message_key).order_by("attempt")
    assert [(g.attempt, g.status) for g in attempts] == [(1, "CANCELLED"), (2, "CONFIRMING")]


def test_a_duplicate_delivery_runs_nothing_again(message_key):
    deliver_all("default", topic=TOPIC, payload__key=message_key)
    force_status(
        Message.objects.filter(pk=message(message_key).pk), Message.Status.SENDING
    )  # as if the ack was lost
    deliver_all("default", topic=TOPIC, payload__key=message_key)
    assert seen == [False]  # the inbox row answered the second one
    assert GlobalTransaction.objects.filter(business_key=message_key).count() == 1
