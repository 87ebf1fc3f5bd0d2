"""Consumption and acknowledgement: once per consumer, inbox-deduplicated, failures kept apart."""

import uuid

import pytest
from django.db import connections, transaction

from paysys.messaging import consumption, outbox, registry
from paysys.messaging.models import InboxEntry, Message
from tests.concurrency import run_at_once
from tests.messaging.helpers import (
    Raw,
    deliver_all,
    deliveries_for,
    force_status,
    handled,
    publish_ping,
)

pytestmark = pytest.mark.django_db(databases="__all__")


# --- consume and acknowledge --------------------------------------------------------------


def test_consume_runs_each_consumer_once_and_acknowledges():
    message_id = publish_ping({"n": 7})

    result = deliver_all("orders")

    assert len(result["acked"]) == 2 and result["failed"] == []
    assert sorted(map(str, handled)) == sorted(map(str, [{"n": 7}, {"accounting": {"n": 7}}]))
    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"CONSUMED"}
    assert (
        InboxEntry.objects.using("notifications")
        .filter(consumer="notifications.test_ping", message_id=message_id)
        .count()
        == 1
    )


echoed: list = []


@registry.consumer("test.echo", queue="notifications", name="notifications.test_echo")
def on_echo(message):
    """Records what it was handed; writes, then fails when asked to (its write must not stay)."""
    InboxEntry.objects.using("notifications").create(
        consumer="echo-effect", message_id=message.payload["key"], topic="x"
    )
    echoed.append(message)
    if message.payload.get("explode"):
        raise RuntimeError("echo exploded")


def publish_echo(**payload) -> uuid.UUID:
    payload.setdefault("key", str(uuid.uuid4()))
    with transaction.atomic(using="orders"):
        return outbox.publish(Raw("test.echo", payload), using="orders")


def test_a_handler_gets_the_delivery_and_the_acknowledgement_closes_the_row(caplog):
    echoed.clear()
    message_id = publish_echo(n=1)
    row = Message.objects.using("orders").get()
    force_status(
        Message.objects.using("orders"), "SENDING", send_count=3, last_error="earlier failure"
    )

    consumption.consume_batch("orders", deliveries_for("orders"))

    (delivery,) = echoed
    assert delivery == consumption.Delivery(
        row.id, message_id, "test.echo", {"n": 1, "key": row.payload["key"]}, 3
    )
    row.refresh_from_db()
    assert (row.status, row.next_send_at, row.last_error) == ("CONSUMED", None, "")
    assert row.consumed_at is not None
    inbox = InboxEntry.objects.using("notifications").get(consumer="notifications.test_echo")
    assert (inbox.message_id, inbox.topic) == (message_id, "test.echo")


def test_a_batch_commits_once_even_with_a_failing_message(caplog):
    """Each message in its own savepoint of one transaction: a handler that writes then fails
    leaves nothing, the others commit together, and the batch never falls back to one
    transaction per message."""
    echoed.clear()
    good = publish_echo(n=1)
    bad = publish_echo(n=2, explode=True)
    also_good = publish_echo(n=3)

    result = consumption.consume_batch("orders", deliveries_for("orders"))

    assert len(result["acked"]) == 2 and len(result["failed"]) == 1
    statuses = dict(Message.objects.using("orders").values_list("message_id", "status"))
    assert statuses == {good: "CONSUMED", bad: "SENDING", also_good: "CONSUMED"}
    assert InboxEntry.objects.using("notifications").filter(consumer="echo-effect").count() == 2
    assert "retrying one by one" not in caplog.text
    assert "echo exploded" in Message.objects.using("orders").get(message_id=bad).last_error


def test_a_failure_is_recorded_on_its_own_row_while_it_is_sending():
    publish_echo(explode=True)
    other = publish_echo(n=2)
    publish_ping()  # another topic, other rows
    deliveries = [d for d in deliveries_for("orders") if d["message_id"] != str(other)]
    force_status(Message.objects.using("orders").filter(topic="test.ping"), "CONSUMED")

    consumption.consume_batch("orders", deliveries)

    errors = dict(
        Message.objects.using("orders").values_list("topic", "last_error").exclude(last_error="")
    )
    assert list(errors) == ["test.echo"] and "echo exploded" in errors["test.echo"]
    assert Message.objects.using("orders").get(message_id=other).last_error == ""


def test_a_late_failure_is_not_written_onto_a_consumed_row():
    """A duplicate delivery failing in a second worker after the first consumed the message."""
    publish_ping()
    force_status(Message.objects.using("orders"), "CONSUMED")
    row = Message.objects.using("orders").first()

    consumption.record_failures("orders", {row.pk: "late failure"})

    assert Message.objects.using("orders").get(pk=row.pk).last_error == ""


def test_nothing_to_acknowledge_is_zero():
    assert consumption.acknowledge("orders", []) == 0


def test_duplicate_delivery_is_a_no_op_and_still_acknowledged():
    publish_ping()
    deliveries = deliveries_for("orders")
    consumption.consume_batch("orders", deliveries)
    force_status(Message.objects.using("orders"), "SENDING")  # as if the first ack was lost
    handled.clear()

    result = consumption.consume_batch("orders", deliveries)

    assert handled == []
    assert len(result["acked"]) == 2
    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"CONSUMED"}


def test_failing_handler_rolls_back_its_writes_and_keeps_the_message_sending():
    publish_ping({"explode": True})

    result = deliver_all("orders")

    failed = Message.objects.using("orders").get(consumer="notifications.test_ping")
    assert result["failed"] == [failed.id]
    assert failed.status == "SENDING"
    assert "handler exploded" in failed.last_error
    assert (
        not InboxEntry.objects.using("notifications")
        .filter(consumer="notifications.test_ping")
        .exists()
    )
    assert not InboxEntry.objects.using("notifications").filter(consumer="side-effect").exists()
    # the other consumer of the same message is unaffected
    assert Message.objects.using("orders").get(consumer="accounting.test_ping").status == "CONSUMED"


@registry.consumer("test.unique", queue="notifications", name="notifications.test_unique")
def on_unique(message):
    """Writes a row unique on its payload's key: a second message with the same key breaks it."""
    InboxEntry.objects.using("notifications").create(
        consumer="unique-effect", message_id=message.payload["key"], topic="x"
    )


def test_a_handlers_own_integrity_error_is_a_failure_not_a_duplicate():
    """Only the consumer's inbox row for this very message makes an IntegrityError a duplicate:
    not its inbox rows of other messages, nor another consumer's row for this one."""
    key = "00000000-0000-0000-0000-000000000001"
    with transaction.atomic(using="orders"):
        first = outbox.publish(Raw("test.unique", {"key": key}), using="orders")
        second = outbox.publish(Raw("test.unique", {"key": key}), using="orders")
    InboxEntry.objects.using("notifications").create(
        consumer="someone.else", message_id=second, topic="test.unique"
    )

    result = deliver_all("orders")

    statuses = dict(Message.objects.using("orders").values_list("message_id", "status"))
    assert statuses == {first: "CONSUMED", second: "SENDING"}
    assert len(result["failed"]) == 1
    assert "IntegrityError" in Message.objects.using("orders").get(message_id=second).last_error


def test_a_long_error_is_kept_to_2000_characters():
    assert consumption._describe(RuntimeError("x" * 5000)) == "RuntimeError: " + "x" * 1986


def test_unknown_consumer_is_recorded_not_raised():
    publish_ping()
    deliveries = deliveries_for("orders")
    deliveries[0]["consumer"] = "gone.consumer"

    result = consumption.consume_batch("orders", deliveries)

    assert result["failed"] == [deliveries[0]["id"]]
    assert result["acked"] == [deliveries[1]["id"]]  # the rest of the batch goes on
    assert "gone.consumer" in Message.objects.using("orders").get(id=deliveries[0]["id"]).last_error


def test_a_late_consumption_of_a_dead_message_counts(ship):
    publish_ping()
    deliveries = deliveries_for("orders")
    force_status(Message.objects.using("orders"), "DEAD")

    consumption.consume_batch("orders", deliveries)

    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"CONSUMED"}


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_two_workers_consuming_the_same_delivery_at_once_apply_it_once():
    publish_ping({"n": 42})
    deliveries = [d for d in deliveries_for("orders") if d["consumer"] == "notifications.test_ping"]
    results = run_at_once(*[lambda: consumption.consume_batch("orders", deliveries)] * 2)

    assert handled == [{"n": 42}]
    assert InboxEntry.objects.using("notifications").filter(consumer="side-effect").count() == 1
    assert [r["acked"] for r in results] == [[deliveries[0]["id"]]] * 2
    assert Message.objects.using("orders").get(id=deliveries[0]["id"]).status == "CONSUMED"


@registry.consumer("test.batch", queue="notifications", name="notifications.test_batch")
def on_batch(message):
    if message.payload.get("explode"):
        raise RuntimeError("handler exploded")
    if message.payload.get("lose_transaction"):
        # what a deadlock does on MariaDB: the server rolls back the whole transaction
        with connections["notifications"].cursor() as cursor:
            cursor.execute("ROLLBACK")
    InboxEntry.objects.using("notifications").create(
        consumer="batch-effect", message_id=message.message_id, topic="x"
    )


def publish_batch(*payloads):
    with transaction.atomic(using="orders"):
        return [outbox.publish(Raw("test.batch", p), using="orders") for p in payloads]


@pytest.mark.parametrize("poison", ["explode", "lose_transaction"])
@pytest.mark.django_db(databases="__all__", transaction=True)
def test_one_failing_message_in_a_batch_fails_alone(poison):
    if poison == "lose_transaction" and connections["notifications"].vendor != "mysql":
        pytest.skip(
            "a transaction lost mid-batch (a deadlock victim) is a MariaDB behaviour; CI runs it there"
        )
    good, bad, also_good = publish_batch({"n": 1}, {poison: True}, {"n": 3})

    result = deliver_all("orders")

    assert len(result["acked"]) == 2 and len(result["failed"]) == 1
    effects = set(
        InboxEntry.objects.using("notifications")
        .filter(consumer="batch-effect")
        .values_list("message_id", flat=True)
    )
    assert effects == {good, also_good}
    assert not InboxEntry.objects.using("notifications").filter(message_id=bad).exists()
    statuses = dict(Message.objects.using("orders").values_list("message_id", "status"))
    assert statuses == {good: "CONSUMED", bad: "SENDING", also_good: "CONSUMED"}
    assert Message.objects.using("orders").get(message_id=bad).last_error


# --- batch consumers (atomic=False, batch=True): the handler takes a relay batch at once ------

batches: list[list] = []


@registry.consumer(
    "test.bulk", queue="notifications", name="notifications.test_bulk", atomic=False, batch=True
)
def on_bulk(deliveries):
    """Records each call's deliveries; fails the ones asked to, or the whole call."""
    batches.append(list(deliveries))
    if any(d.payload.get("raise") for d in deliveries):
        raise RuntimeError("bulk handler exploded")
    return {d.id: "refused by the test" for d in deliveries if d.payload.get("refuse")}


def publish_bulk(*payloads) -> list[uuid.UUID]:
    with transaction.atomic(using="orders"):
        return [outbox.publish(Raw("test.bulk", payload), using="orders") for payload in payloads]


def test_a_batch_consumer_gets_the_whole_batch_in_one_call_and_its_errors_stay_apart():
    batches.clear()
    ids = publish_bulk({"n": 1}, {"n": 2, "refuse": True}, {"n": 3})

    result = consumption.consume_batch("orders", deliveries_for("orders"))

    assert [[d.payload["n"] for d in call] for call in batches] == [[1, 2, 3]]
    rows = {m.message_id: m for m in Message.objects.using("orders")}
    assert [rows[i].status for i in ids] == ["CONSUMED", "SENDING", "CONSUMED"]
    assert rows[ids[1]].last_error == "refused by the test" and result["failed"] == [
        rows[ids[1]].id
    ]
    inbox = set(
        InboxEntry.objects.using("notifications")
        .filter(consumer="notifications.test_bulk")
        .values_list("message_id", flat=True)
    )
    assert inbox == {ids[0], ids[2]}

    batches.clear()
    consumption.consume_batch("orders", deliveries_for("orders"))  # everything again: a redelivery
    assert [[d.payload["n"] for d in call] for call in batches] == [
        [2]
    ]  # the consumed ones are skipped


def test_a_batch_consumer_that_raises_fails_every_delivery_of_the_call():
    batches.clear()
    publish_bulk({"n": 1}, {"n": 2, "raise": True})

    result = consumption.consume_batch("orders", deliveries_for("orders"))

    assert result["acked"] == [] and len(result["failed"]) == 2
    assert {m.last_error for m in Message.objects.using("orders")} == {
        "RuntimeError: bulk handler exploded"
    }
    assert (
        not InboxEntry.objects.using("notifications")
        .filter(consumer="notifications.test_bulk")
        .exists()
    )


# --- atomic batch consumers (batch=True): one savepoint and one inbox INSERT per relay batch ----

atomic_calls: list[list] = []


@registry.consumer(
    "test.atomic_bulk", queue="notifications", name="notifications.test_atomic_bulk", batch=True
)
def on_atomic_bulk(deliveries):
    """Writes an effect row per delivery; a poison payload breaks the whole call."""
    atomic_calls.append([d.payload["n"] for d in deliveries])
    for delivery in deliveries:
        InboxEntry.objects.using("notifications").create(
            consumer="bulk-effect", message_id=delivery.message_id, topic="x"
        )
    for delivery in deliveries:
        if delivery.payload.get("explode"):
            raise RuntimeError("atomic bulk exploded")
        if delivery.payload.get("lose_transaction"):
            with connections["notifications"].cursor() as cursor:
                cursor.execute("ROLLBACK")


def publish_atomic_bulk(*payloads) -> list[uuid.UUID]:
    with transaction.atomic(using="orders"):
        return [
            outbox.publish(Raw("test.atomic_bulk", payload), using="orders") for payload in payloads
        ]


def bulk_effects() -> set:
    return set(
        InboxEntry.objects.using("notifications")
        .filter(consumer="bulk-effect")
        .values_list("message_id", flat=True)
    )


def test_an_atomic_batch_consumer_gets_the_batch_in_one_call_and_skips_the_consumed():
    atomic_calls.clear()
    ids = publish_atomic_bulk({"n": 1}, {"n": 2}, {"n": 3})

    result = consumption.consume_batch("orders", deliveries_for("orders"))

    assert atomic_calls == [[1, 2, 3]] and len(result["acked"]) == 3 and result["failed"] == []
    assert bulk_effects() == set(ids)
    inbox = InboxEntry.objects.using("notifications").filter(
        consumer="notifications.test_atomic_bulk"
    )
    assert set(inbox.values_list("message_id", flat=True)) == set(ids)

    atomic_calls.clear()
    force_status(
        Message.objects.using("orders"), "SENDING"
    )  # a lost acknowledgement: all delivered again
    assert len(consumption.consume_batch("orders", deliveries_for("orders"))["acked"]) == 3
    assert atomic_calls == [] and bulk_effects() == set(ids)  # nothing ran twice


@pytest.mark.parametrize("poison", ["explode", "lose_transaction"])
@pytest.mark.django_db(databases="__all__", transaction=True)
def test_a_poison_message_in_an_atomic_batch_fails_alone(poison):
    if poison == "lose_transaction" and connections["notifications"].vendor != "mysql":
        pytest.skip(
            "a transaction lost mid-batch (a deadlock victim) is a MariaDB behaviour; CI runs it there"
        )
    atomic_calls.clear()
    good, bad, also_good = publish_atomic_bulk({"n": 1}, {"n": 2, poison: True}, {"n": 3})

    result = deliver_all("orders")

    assert atomic_calls[0] == [1, 2, 3] and sorted(atomic_calls[1:]) == [
        [1],
        [2],
        [3],
    ]  # then one by one
    assert len(result["acked"]) == 2 and len(result["failed"]) == 1
    assert bulk_effects() == {good, also_good}  # the failed call's writes rolled back with it
    statuses = dict(Message.objects.using("orders").values_list("message_id", "status"))
    assert statuses == {good: "CONSUMED", bad: "SENDING", also_good: "CONSUMED"}
    assert Message.objects.using("orders").get(message_id=bad).last_error
