import threading
import time
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from paysys.core.models import Payer
from paysys.messaging import actions, consumption, kicks, outbox, recovery, registry, relay
from paysys.messaging.models import InboxEntry, Message
from tests.concurrency import run_at_once
from tests.messaging.helpers import ShipRecorder, deliver_all, deliveries_for, force_status

pytestmark = pytest.mark.django_db(databases="__all__")

handled: list[dict] = []


@registry.consumer("test.ping", queue="notifications", name="notifications.test_ping")
def on_ping(message):
    if message.payload.get("explode"):
        raise RuntimeError("handler exploded")
    # a real write in the consumer's alias, so rollback is observable
    InboxEntry.objects.using("notifications").create(consumer="side-effect", message_id=message.message_id, topic="x")
    handled.append(message.payload)


@registry.consumer("test.ping", queue="accounting", name="accounting.test_ping")
def on_ping_accounting(message):
    handled.append({"accounting": message.payload})


@registry.check_back("test.payer_exists")
def payer_exists(business_key: str):
    if business_key == "undecided":
        return None
    return Payer.objects.filter(name=business_key).exists()


@pytest.fixture(autouse=True)
def _reset():
    handled.clear()


@pytest.fixture
def ship(monkeypatch):
    recorder = ShipRecorder()
    monkeypatch.setattr(relay, "_ship", recorder)
    return recorder


def publish_ping(payload=None, alias="orders"):
    with transaction.atomic(using=alias):
        return outbox.publish("test.ping", payload or {"n": 1}, using=alias)


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
    with pytest.raises(RuntimeError, match="inside the producer's transaction"):
        outbox.publish("test.ping", {}, using="orders")

    assert Message.objects.using("orders").count() == 0


def test_rolled_back_transaction_publishes_nothing():
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic(using="orders"):
            outbox.publish("test.ping", {"n": 1}, using="orders")
            1 / 0

    assert Message.objects.using("orders").count() == 0


def test_unknown_topic_is_refused():
    with pytest.raises(outbox.UnknownTopic):
        with transaction.atomic(using="orders"):
            outbox.publish("nobody.listens", {}, using="orders")


def test_delivery_is_kicked_only_after_commit(django_capture_on_commit_callbacks, monkeypatch):
    kicked = []
    monkeypatch.setattr(kicks, "kick_relay", kicked.append)

    with django_capture_on_commit_callbacks(using="orders", execute=False) as callbacks:
        publish_ping()
    assert kicked == []

    for callback in callbacks:
        callback()
    assert kicks.flush_relay_requests()  # kicks leave from a background thread
    assert kicked == ["orders"]


def test_kicks_of_many_commits_coalesce_and_never_block_the_commit(monkeypatch):
    release, kicked = threading.Event(), []

    def slow_kick(alias):  # a hung cache or broker
        release.wait(5)
        kicked.append(alias)

    monkeypatch.setattr(kicks, "kick_relay", slow_kick)
    started = time.monotonic()
    for _ in range(20):
        kicks.request_relay("orders")
    assert time.monotonic() - started < 0.5  # the producers did not wait

    release.set()
    assert kicks.flush_relay_requests()
    assert 1 <= kicked.count("orders") <= 2


# --- consume and acknowledge --------------------------------------------------------------


def test_consume_runs_each_consumer_once_and_acknowledges():
    message_id = publish_ping({"n": 7})

    result = deliver_all("orders")

    assert len(result["acked"]) == 2 and result["failed"] == []
    assert sorted(map(str, handled)) == sorted(map(str, [{"n": 7}, {"accounting": {"n": 7}}]))
    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"CONSUMED"}
    assert InboxEntry.objects.using("notifications").filter(consumer="notifications.test_ping", message_id=message_id).count() == 1


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
    assert not InboxEntry.objects.using("notifications").filter(consumer="notifications.test_ping").exists()
    assert not InboxEntry.objects.using("notifications").filter(consumer="side-effect").exists()
    # the other consumer of the same message is unaffected
    assert Message.objects.using("orders").get(consumer="accounting.test_ping").status == "CONSUMED"


def test_unknown_consumer_is_recorded_not_raised():
    publish_ping()
    deliveries = deliveries_for("orders")
    deliveries[0]["consumer"] = "gone.consumer"

    result = consumption.consume_batch("orders", deliveries)

    assert result["failed"] == [deliveries[0]["id"]]
    assert "gone.consumer" in Message.objects.using("orders").get(id=deliveries[0]["id"]).last_error


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
    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"DEAD"}


def test_resend_clears_dead_and_starts_the_count_over(ship, monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    publish_ping()
    force_status(Message.objects.using("orders"), "DEAD", send_count=5, next_send_at=None)

    resent = actions.resend_dead_messages("orders", queue="notifications")

    assert resent == 1
    row = Message.objects.using("orders").get(queue="notifications")
    assert (row.status, row.send_count) == ("SENDING", 0)
    assert Message.objects.using("orders").get(queue="accounting").status == "DEAD"
    relay.relay_due("orders")
    deliver_all("orders", queue="notifications")
    assert Message.objects.using("orders").get(queue="notifications").status == "CONSUMED"


def test_a_late_consumption_of_a_dead_message_counts(ship):
    publish_ping()
    deliveries = deliveries_for("orders")
    force_status(Message.objects.using("orders"), "DEAD")

    consumption.consume_batch("orders", deliveries)

    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"CONSUMED"}


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_concurrent_relay_passes_send_each_row_once(ship):
    for n in range(40):
        publish_ping({"n": n})
    run_at_once(*[lambda: relay.relay_due("orders")] * 4)

    assert len(ship.ids) == 80
    assert len(set(ship.ids)) == 80
    assert set(Message.objects.using("orders").values_list("send_count", flat=True)) == {1}


# --- two-phase and check-back -------------------------------------------------------------


def test_prepared_message_is_not_sent_until_confirmed(ship, monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    message_id = outbox.prepare("test.ping", {"n": 1}, business_key="k", check_back="test.payer_exists")

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


@pytest.mark.parametrize(
    "business_key,committed,expected",
    [("alice", True, "SENDING"), ("bob", False, None), ("undecided", False, "PREPARED")],
)
def test_check_back_resolves_stale_prepared(business_key, committed, expected, monkeypatch, settings):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    if committed:
        Payer.objects.create(name=business_key)
    message_id = outbox.prepare("test.ping", {}, business_key=business_key, check_back="test.payer_exists")
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)

    assert recovery.check_back_due("default", now=later) == 1

    statuses = set(Message.objects.using("default").filter(message_id=message_id).values_list("status", flat=True))
    assert statuses == ({expected} if expected else set())


def test_check_back_gives_up_to_dead_after_the_limit(monkeypatch, settings):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    settings.MESSAGE_CHECK_BACK_MAX = 3
    message_id = outbox.prepare("test.ping", {}, business_key="undecided", check_back="test.payer_exists")
    now = timezone.now()

    for _ in range(3):
        now += timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + settings.MESSAGE_CHECK_BACK_INTERVAL)
        recovery.check_back_due("default", now=now)

    rows = Message.objects.using("default").filter(message_id=message_id)
    assert set(rows.values_list("status", flat=True)) == {"DEAD"}
    assert "undecided after 3 asks" in rows.first().last_error


def test_prepare_is_idempotent_on_topic_and_business_key(monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)

    first = outbox.prepare("test.ping", {"n": 1}, business_key="tx-1", check_back="test.payer_exists")
    replay = outbox.prepare("test.ping", {"n": 1}, business_key="tx-1", check_back="test.payer_exists")

    assert replay == first
    assert Message.objects.using("default").filter(business_key="tx-1").count() == 2  # one per consumer
    with pytest.raises(outbox.DuplicateBusinessKey):
        outbox.prepare("test.ping", {"n": 2}, business_key="tx-1", check_back="test.payer_exists")


def test_a_human_settles_a_message_dead_after_undecided_check_backs(monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    committed = outbox.prepare("test.ping", {}, business_key="c", check_back="test.payer_exists")
    rolled_back = outbox.prepare("test.ping", {}, business_key="r", check_back="test.payer_exists")
    force_status(Message.objects.using("default"), "DEAD", next_send_at=None)

    assert actions.resend_dead_messages("default", queue="notifications") == 0  # never confirmed: not resent
    assert outbox.confirm(committed) == 2
    assert outbox.discard(rolled_back) == 2

    rows = Message.objects.using("default")
    assert set(rows.values_list("status", flat=True)) == {"SENDING"}
    assert all(r.confirmed_at and r.send_count == 0 for r in rows)
    assert outbox.discard(committed) == 0  # confirmed messages are never dropped


def test_beat_entries_expire_so_slow_passes_do_not_pile_up():
    from django_celery_beat.models import PeriodicTask

    from paysys.core.schedules import sync_beat_schedules

    sync_beat_schedules()

    poll = PeriodicTask.objects.get(name="orders.poll_bank")
    assert poll.expire_seconds == 1
    assert PeriodicTask.objects.get(name="messaging.recover_messages").expire_seconds == 5


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
    InboxEntry.objects.using("notifications").create(consumer="batch-effect", message_id=message.message_id, topic="x")


def publish_batch(*payloads):
    with transaction.atomic(using="orders"):
        return [outbox.publish("test.batch", p, using="orders") for p in payloads]


@pytest.mark.parametrize("poison", ["explode", "lose_transaction"])
@pytest.mark.django_db(databases="__all__", transaction=True)
def test_one_failing_message_in_a_batch_fails_alone(poison):
    if poison == "lose_transaction" and connections["notifications"].vendor != "mysql":
        pytest.skip("a transaction lost mid-batch (a deadlock victim) is a MariaDB behaviour; CI runs it there")
    good, bad, also_good = publish_batch({"n": 1}, {poison: True}, {"n": 3})

    result = deliver_all("orders")

    assert len(result["acked"]) == 2 and len(result["failed"]) == 1
    effects = set(InboxEntry.objects.using("notifications").filter(consumer="batch-effect").values_list("message_id", flat=True))
    assert effects == {good, also_good}
    assert not InboxEntry.objects.using("notifications").filter(message_id=bad).exists()
    statuses = dict(Message.objects.using("orders").values_list("message_id", "status"))
    assert statuses == {good: "CONSUMED", bad: "SENDING", also_good: "CONSUMED"}
    assert Message.objects.using("orders").get(message_id=bad).last_error
