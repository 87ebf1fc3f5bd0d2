"""Writing the outbox: publish in the producer's transaction; prepare, confirm, discard."""

import pytest
from django.db import connections, transaction
from django.utils import timezone

from paysys.messaging import actions, kicks, outbox, relay
from paysys.messaging.models import Message
from tests.messaging.helpers import Raw, force_status, publish_ping

pytestmark = pytest.mark.django_db(databases="__all__")


# --- publish ------------------------------------------------------------------------------


def test_publish_writes_one_row_per_consumer_due_now():
    message_id = publish_ping()

    rows = Message.objects.using("orders").filter(message_id=message_id)
    assert sorted(rows.values_list("consumer", "queue")) == [
        ("accounting.test_ping", "accounting"),
        ("notifications.test_ping", "notifications"),
    ]
    assert {r.status for r in rows} == {"SENDING"}
    assert all(r.next_send_at <= timezone.now() for r in rows)


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_publish_outside_a_transaction_is_refused():
    with pytest.raises(
        RuntimeError,
        match=r"^publish\(\) must run inside the producer's transaction\.atomic\(using=\.\.\.\)$",
    ):
        outbox.publish(Raw("test.ping", {}), using="orders")

    assert Message.objects.using("orders").count() == 0


def test_rolled_back_transaction_publishes_nothing():
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic(using="orders"):
            outbox.publish(Raw("test.ping", {"n": 1}), using="orders")
            raise ZeroDivisionError

    assert Message.objects.using("orders").count() == 0


def test_unknown_topic_is_refused():
    with pytest.raises(
        outbox.UnknownTopic, match="^no consumer is registered for topic 'nobody.listens'$"
    ):
        with transaction.atomic(using="orders"):
            outbox.publish(Raw("nobody.listens", {}), using="orders")


def test_publish_many_writes_every_message_in_one_insert_and_kicks_once(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    payloads = [{"n": n} for n in range(5)]

    with django_capture_on_commit_callbacks(using="orders") as callbacks:
        with transaction.atomic(using="orders"):
            with django_assert_num_queries(1, connection=connections["orders"]):
                message_ids = outbox.publish_many(
                    [Raw("test.ping", p) for p in payloads], using="orders"
                )

    assert len(set(message_ids)) == 5 and len(callbacks) == 1
    rows = Message.objects.using("orders").order_by("id")
    assert rows.count() == 10  # one row per consumer of each message
    assert {row.message_id: row.payload for row in rows} == dict(
        zip(message_ids, payloads, strict=False)
    )
    assert {(row.status, row.confirmed_at is not None) for row in rows} == {("SENDING", True)}


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_publish_many_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError, match=r"must run inside the producer's transaction"):
        outbox.publish_many([Raw("test.ping", {})], using="orders")

    assert Message.objects.using("orders").count() == 0


def test_prepared_message_is_not_sent_until_confirmed(ship, monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    message_id = outbox.prepare(
        "test.ping", {"n": 1}, business_key="k", check_back="test.payer_exists"
    )

    assert relay.relay_due("default") == 0
    assert outbox.confirm(message_id) == 2
    assert outbox.confirm(message_id) == 0
    assert relay.relay_due("default") == 2


def test_discard_drops_only_prepared(monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    kept = outbox.prepare("test.ping", {}, business_key="a", check_back="test.payer_exists")
    dropped = outbox.prepare("test.ping", {}, business_key="b", check_back="test.payer_exists")
    outbox.confirm(kept)

    assert outbox.discard(dropped) == 2
    assert outbox.discard(kept) == 0
    assert Message.objects.using("default").filter(message_id=kept).count() == 2


def test_a_sent_message_that_went_dead_is_neither_confirmed_nor_discarded(ship, kicked):
    """Only never-confirmed messages wait for their producer: one that was sent is a resend's."""
    message_id = outbox.prepare(
        "test.ping", {}, using="orders", business_key="k", check_back="test.payer_exists"
    )
    outbox.confirm(message_id, using="orders")
    relay.relay_due("orders")
    force_status(Message.objects.using("orders"), "DEAD")

    assert outbox.confirm(message_id, using="orders") == 0
    assert outbox.discard(message_id, using="orders") == 0
    assert set(Message.objects.using("orders").values_list("status", "send_count")) == {("DEAD", 1)}


def test_a_confirm_kicks_the_relay_after_its_own_commit(django_capture_on_commit_callbacks, kicked):
    message_id = outbox.prepare(
        "test.ping", {}, using="orders", business_key="k", check_back="test.payer_exists"
    )

    with django_capture_on_commit_callbacks(using="orders", execute=True) as callbacks:
        assert outbox.confirm(message_id, using="orders") == 2
        assert kicked == []  # not before the confirm commits

    assert len(callbacks) == 1
    assert kicks.flush_relay_requests()
    assert kicked == ["orders"]


@pytest.mark.parametrize("alias", ["default", "orders"])
def test_prepare_is_idempotent_on_topic_and_business_key(alias, kicked):
    def prepare(payload):
        return outbox.prepare(
            "test.ping", payload, using=alias, business_key="tx-1", check_back="test.payer_exists"
        )

    first = prepare({"n": 1})
    replay = prepare({"n": 1})

    assert replay == first
    assert Message.objects.using(alias).filter(business_key="tx-1").count() == 2  # one per consumer
    with pytest.raises(
        outbox.DuplicateBusinessKey, match="business key 'tx-1' was prepared with another payload"
    ):
        prepare({"n": 2})


def test_a_human_settles_a_message_dead_after_undecided_check_backs(monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    committed = outbox.prepare("test.ping", {}, business_key="c", check_back="test.payer_exists")
    rolled_back = outbox.prepare("test.ping", {}, business_key="r", check_back="test.payer_exists")
    force_status(Message.objects.using("default"), "DEAD", next_send_at=None)

    assert (
        actions.resend_dead_messages("default", queue="notifications") == 0
    )  # never confirmed: not resent
    assert outbox.confirm(committed) == 2
    assert outbox.discard(rolled_back) == 2

    rows = Message.objects.using("default")
    assert set(rows.values_list("status", flat=True)) == {"SENDING"}
    assert all(r.confirmed_at and r.send_count == 0 for r in rows)
    assert outbox.discard(committed) == 0  # confirmed messages are never dropped
