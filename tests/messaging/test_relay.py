"""The relay: due rows shipped once per round, resent on schedule, then DEAD."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from paysys.messaging import outbox, relay, tasks
from paysys.messaging.models import Message
from tests.concurrency import run_at_once
from tests.messaging.helpers import Raw, publish_ping

pytestmark = pytest.mark.django_db(databases="__all__")


# --- relay, resend schedule, dead -----------------------------------------------------------


def test_relay_ships_due_rows_and_schedules_the_resend(ship, settings):
    settings.MESSAGE_RESEND_SCHEDULE = [0, 60, 120, 300, 900]
    publish_ping()
    now = timezone.now()

    sent = relay.relay_due("orders", now=now)

    assert sent == 2 and len(ship.ids) == 2
    for row in Message.objects.using("orders"):
        assert row.send_count == 1
        assert row.next_send_at == now + timedelta(seconds=60)
    assert relay.relay_due("orders", now=now) == 0  # not due again yet


def test_unconsumed_message_is_resent_on_schedule_then_dead(ship, settings):
    settings.MESSAGE_RESEND_SCHEDULE = [0, 60, 120, 300, 900]
    publish_ping()
    row_id = Message.objects.using("orders").order_by("id").first().id
    now = timezone.now()
    waits = []

    for _ in range(5):
        assert relay.relay_due("orders", now=now) == 2
        row = Message.objects.using("orders").get(id=row_id)
        waits.append(round((row.next_send_at - now).total_seconds()))
        now = row.next_send_at

    assert waits == [60, 120, 300, 900, 900]
    assert relay.relay_due("orders", now=now) == 0
    assert set(Message.objects.using("orders").values_list("status", "next_send_at")) == {
        ("DEAD", None)
    }
    # and: the last error says why (admin showed "Last error: -")
    assert {row.last_error for row in Message.objects.using("orders")} == {
        "not consumed after 5 sends: no consumer answered (is its queue's worker running?)"
    }


def test_a_consumer_error_stays_the_last_error_of_a_dead_message(ship, settings):
    settings.MESSAGE_RESEND_SCHEDULE = [0]
    publish_ping()
    Message.objects.using("orders").update(last_error="ContractError: no field n")
    now = timezone.now()
    relay.relay_due("orders", now=now)

    relay.relay_due("orders", now=now + timedelta(seconds=1))

    assert {(row.status, row.last_error) for row in Message.objects.using("orders")} == {
        ("DEAD", "ContractError: no field n")
    }


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_concurrent_relay_passes_send_each_row_once(ship):
    for n in range(40):
        publish_ping({"n": n})
    run_at_once(*[lambda: relay.relay_due("orders")] * 4)

    assert len(ship.ids) == 80
    assert len(set(ship.ids)) == 80
    assert set(Message.objects.using("orders").values_list("send_count", flat=True)) == {1}


# --- the hand-off to the broker ----------------------------------------------------------------


class Broker:
    """Stands in for consume.apply_async: records each task, refuses from the ``refuse_from``-th."""

    def __init__(self, refuse_from: int | None = None):
        self.tasks: list[tuple[str, str, list[dict]]] = []
        self.refuse_from = refuse_from

    def __call__(self, *, args, kwargs, queue, producer):
        if self.refuse_from is not None and len(self.tasks) + 1 >= self.refuse_from:
            raise ConnectionError("broker down")
        assert producer is not None  # one connection for the whole pass
        origin, batch = args
        self.tasks.append((origin, queue, batch))
        self.slots.append(kwargs.get("slot"))

    @property
    def slots(self) -> list:
        return self.__dict__.setdefault("_slots", [])


def publish_pings(n: int) -> None:
    with transaction.atomic(using="orders"):
        for i in range(n):
            outbox.publish(Raw("test.ping", {"n": i}), using="orders")


def test_the_relay_sends_each_queue_its_deliveries_100_per_task(monkeypatch):
    broker = Broker()
    monkeypatch.setattr(tasks.consume, "apply_async", broker)
    publish_pings(101)  # two consumers: 101 rows for each queue

    assert relay.relay_due("orders") == 202

    sizes = sorted((queue, len(batch)) for _, queue, batch in broker.tasks)
    assert sizes == [
        ("accounting", 1),
        ("accounting", 100),
        ("notifications", 1),
        ("notifications", 100),
    ]
    assert {origin for origin, _, _ in broker.tasks} == {"orders"}
    row = Message.objects.using("orders").get(consumer="accounting.test_ping", payload__n=0)
    delivery = next(d for _, _, batch in broker.tasks for d in batch if d["id"] == row.id)
    assert delivery == {
        "id": row.id,
        "message_id": str(row.message_id),
        "topic": "test.ping",
        "consumer": "accounting.test_ping",
        "payload": {"n": 0},
        "send_count": 1,
    }


def test_what_the_broker_refuses_was_no_send(monkeypatch, settings):
    """The broker goes down after two tasks: the rest stay SENDING, their count not spent,
    due again after MESSAGE_BROKER_RETRY_SECONDS."""
    broker = Broker(refuse_from=3)
    monkeypatch.setattr(tasks.consume, "apply_async", broker)
    publish_pings(150)  # 150 rows per queue: two tasks each (100 + 50), one queue after the other

    before = timezone.now()
    assert relay.relay_due("orders") == 150

    assert [len(batch) for _, _, batch in broker.tasks] == [100, 50]
    (shipped_queue,) = {queue for _, queue, _ in broker.tasks}
    rows = Message.objects.using("orders")
    assert set(rows.filter(queue=shipped_queue).values_list("send_count", flat=True)) == {1}
    refused = rows.exclude(queue=shipped_queue)
    assert set(refused.values_list("status", "send_count")) == {("SENDING", 0)}
    retry = timedelta(seconds=settings.MESSAGE_BROKER_RETRY_SECONDS)
    assert all(before + retry <= r.next_send_at <= timezone.now() + retry for r in refused)


# --- paced passes: one batch per queue in flight, so batches grow with the backlog ---------------


@pytest.fixture
def clean_slots():
    from django.core.cache import cache

    keys = [relay.slot_key("orders", q) for q in ("accounting", "notifications")]
    cache.delete_many(keys)
    yield keys
    cache.delete_many(keys)


def test_a_paced_pass_ships_one_batch_per_free_queue_and_holds_it(monkeypatch, clean_slots):
    broker = Broker()
    monkeypatch.setattr(tasks.consume, "apply_async", broker)
    publish_pings(150)

    assert relay.relay_due("orders", paced=True) == 200  # 100 per queue, the rest waits

    assert sorted((queue, len(batch)) for _, queue, batch in broker.tasks) == [
        ("accounting", 100),
        ("notifications", 100),
    ]
    assert sorted(broker.slots) == sorted(clean_slots)
    # when: more commits kick more passes while both batches are being consumed
    publish_pings(5)
    assert relay.relay_due("orders", paced=True) == 0  # nothing ships: it waits in the outbox, due
    assert Message.objects.using("orders").filter(status="SENDING", send_count=0).count() == 2 * (
        50 + 5
    )


def test_the_end_of_a_paced_batch_frees_its_queue_and_kicks_the_next_pass(monkeypatch, clean_slots):
    from django.core.cache import cache

    broker = Broker()
    monkeypatch.setattr(tasks.consume, "apply_async", broker)
    kicks = []
    monkeypatch.setattr(tasks.kicks, "kick_relay", kicks.append)
    publish_pings(150)
    relay.relay_due("orders", paced=True)
    origin, queue, batch = broker.tasks[0]

    tasks.consume.run(origin, batch, slot=broker.slots[0])  # the worker consumes the first batch

    assert cache.get(broker.slots[0]) is None and cache.get(broker.slots[1]) is not None
    assert kicks == ["orders"]
    assert relay.relay_due("orders", paced=True) == 50  # that queue's rest, as one batch
    assert [(q, len(b)) for _, q, b in broker.tasks[2:]] == [(queue, 50)]


def test_recovery_resends_overdue_rows_whatever_is_in_flight(monkeypatch, clean_slots):
    from django.core.cache import cache

    broker = Broker()
    monkeypatch.setattr(tasks.consume, "apply_async", broker)
    cache.set_many(
        {key: 1 for key in clean_slots}, timeout=60
    )  # batches in flight (or their worker died)
    publish_pings(3)

    assert relay.relay_due("orders", paced=True) == 0
    assert relay.relay_due("orders") == 6  # the recovery pass (unpaced)


# --- the relay in the producer's process (MESSAGE_RELAY_INLINE) ---------------------------------


def test_with_the_relay_inline_the_producer_ships_its_commit_itself(
    monkeypatch, settings, clean_slots
):
    settings.MESSAGE_RELAY_INLINE = True
    broker, relay_tasks = Broker(), []
    monkeypatch.setattr(tasks.consume, "apply_async", broker)
    monkeypatch.setattr(tasks.relay, "apply_async", lambda **kwargs: relay_tasks.append(kwargs))
    publish_pings(3)

    tasks.kicks.relay_or_kick("orders")  # what the kicker thread runs after the commit

    assert relay_tasks == []  # no hop through the service's worker
    assert sorted((queue, len(batch)) for _, queue, batch in broker.tasks) == [
        ("accounting", 3),
        ("notifications", 3),
    ]
    assert sorted(broker.slots) == sorted(clean_slots)  # paced, as the relay task's pass is
    assert set(Message.objects.using("orders").values_list("send_count", flat=True)) == {1}


def test_an_inline_relay_pass_that_fails_kicks_the_relay_task_instead(
    monkeypatch, settings, clean_slots
):
    from django.db import OperationalError

    settings.MESSAGE_RELAY_INLINE = True
    kicked = []
    monkeypatch.setattr(tasks.kicks, "kick_relay", kicked.append)

    def database_gone(alias, **kwargs):
        raise OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(relay, "relay_due", database_gone)
    publish_pings(1)

    tasks.kicks.relay_or_kick("orders")

    assert kicked == ["orders"]
    assert set(Message.objects.using("orders").values_list("send_count", flat=True)) == {
        0
    }  # still due


def test_without_the_relay_inline_a_commit_kicks_the_relay_task(monkeypatch, settings):
    settings.MESSAGE_RELAY_INLINE = False
    kicked = []
    monkeypatch.setattr(tasks.kicks, "kick_relay", kicked.append)
    monkeypatch.setattr(
        relay, "relay_due", lambda *a, **k: pytest.fail("no pass runs in the producer")
    )

    tasks.kicks.relay_or_kick("orders")

    assert kicked == ["orders"]
