"""GET /metrics, the outbox's families: counts per service, queue and state, straight from every
database; one query per database, over the rows not consumed."""

from datetime import timedelta

import pytest
from django.db import OperationalError, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from paysys.messaging.metrics import outbox_stats
from paysys.messaging.models import Message

pytestmark = [pytest.mark.django_db(databases="__all__")]

METRICS_TOKEN = "metrics-token-for-the-tests-0123456789"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN


Status = Message.Status


def add(
    alias: str,
    status: str,
    *,
    queue: str = "accounting",
    send_count: int = 0,
    age: timedelta | None = None,
) -> Message:
    row = Message.objects.using(alias).create(
        topic="test.metrics",
        consumer="accounting.test_metrics",
        queue=queue,
        payload={},
        status=status,
        send_count=send_count,
    )
    if age is not None:  # created_at is auto_now_add: move it back afterwards
        Message.objects.using(alias).filter(pk=row.pk).update(created_at=timezone.now() - age)
    return row


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def labels(**values) -> tuple:
    return tuple(sorted(values.items()))


def test_counts_match_the_rows_of_two_services(client):
    for status, n in [(Status.SENDING, 2), (Status.CONSUMED, 3), (Status.DEAD, 1)]:
        for _ in range(n):
            add("orders", status)
    add("orders", Status.PREPARED, queue="notifications")
    for _ in range(4):
        add("accounting", Status.DEAD, queue="funds")

    samples = scrape(client)

    assert (
        samples[("paysys_messages", labels(service="orders", queue="accounting", status="SENDING"))]
        == 2
    )
    # consumed rows are history: not counted (their number is business volume, and a full scan)
    assert (
        "paysys_messages",
        labels(service="orders", queue="accounting", status="CONSUMED"),
    ) not in samples
    assert (
        samples[("paysys_messages", labels(service="orders", queue="accounting", status="DEAD"))]
        == 1
    )
    assert (
        samples[
            ("paysys_messages", labels(service="orders", queue="accounting", status="PREPARED"))
        ]
        == 0
    )
    assert (
        samples[
            ("paysys_messages", labels(service="orders", queue="notifications", status="PREPARED"))
        ]
        == 1
    )
    assert (
        samples[("paysys_messages", labels(service="accounting", queue="funds", status="DEAD"))]
        == 4
    )
    assert samples[("paysys_messages_dead", labels(service="orders", queue="accounting"))] == 1
    assert samples[("paysys_messages_dead", labels(service="orders", queue="notifications"))] == 0
    assert samples[("paysys_messages_dead", labels(service="accounting", queue="funds"))] == 4
    # nothing from a service that publishes no topic and has an empty outbox but its health and zero age
    assert not any(
        name == "paysys_messages" and ("service", "points") in lbls for name, lbls in samples
    )
    assert samples[("paysys_message_oldest_pending_seconds", labels(service="points"))] == 0
    for alias in connections:
        assert samples[("paysys_database_up", labels(alias=alias))] == 1


def test_an_idle_system_reads_zero_for_every_producer_and_consumer_queue_not_no_data(client):
    # given: every outbox empty (a healthy, idle system)

    samples = scrape(client)

    # then: each topic's producer reports each of its consumer queues, at 0: sum() is 0, absent() is false
    known = {
        ("default", "orders"),
        ("default", "polling"),
        ("orders", "accounting"),
        ("orders", "notifications"),
        ("funds", "accounting"),
        ("default", "core"),
        ("orders", "funds"),
        ("orders", "points"),
        ("orders", "polling"),
    }
    # bank.payment_succeeded (twice: applied by orders, postponing polling), order.paid (twice),
    # wallet.credited, messaging.bench, refund.finished (funds, points, accounting, notifications),
    # refund.requested (polling)
    for service, queue in known:
        for status in ("PREPARED", "SENDING", "DEAD"):
            assert (
                samples[("paysys_messages", labels(service=service, queue=queue, status=status))]
                == 0
            )
        assert samples[("paysys_messages_dead", labels(service=service, queue=queue))] == 0
    assert {
        (dict(lbls)["service"], dict(lbls)["queue"])
        for name, lbls in samples
        if name == "paysys_messages_dead"
    } == known


def test_oldest_pending_ignores_consumed_and_dead(client):
    add("orders", Status.CONSUMED, age=timedelta(days=2))
    add("orders", Status.DEAD, age=timedelta(days=1))
    add("orders", Status.SENDING, age=timedelta(minutes=10))
    add("orders", Status.PREPARED, age=timedelta(minutes=5))

    age = scrape(client)[("paysys_message_oldest_pending_seconds", labels(service="orders"))]

    assert 600 <= age < 660


def test_resends_counts_sends_beyond_the_first(client):
    for send_count, status in [
        (0, Status.SENDING),
        (1, Status.CONSUMED),
        (3, Status.CONSUMED),
        (5, Status.DEAD),
        (2, Status.SENDING),
    ]:
        add("notifications", status, send_count=send_count)
    add("points", Status.SENDING, send_count=4)

    samples = scrape(client)

    assert (
        samples[("paysys_message_resends", labels(service="notifications"))] == 0 + 4 + 1
    )  # rows not consumed
    assert samples[("paysys_message_resends", labels(service="points"))] == 3
    assert samples[("paysys_message_resends", labels(service="default"))] == 0
    assert outbox_stats("notifications").resends == 7


def test_a_database_that_is_down_is_skipped_not_a_500(client):
    add("orders", Status.DEAD)
    add("funds", Status.DEAD)

    def refuse(execute, sql, params, many, context):
        raise OperationalError("(2003) can't connect to MySQL server")

    with connections["orders"].execute_wrapper(refuse):
        samples = scrape(client)

    assert samples[("paysys_database_up", labels(alias="orders"))] == 0
    assert samples[("paysys_database_up", labels(alias="funds"))] == 1
    assert samples[("paysys_messages_dead", labels(service="funds", queue="accounting"))] == 1
    assert not any(("service", "orders") in lbls for _, lbls in samples)


def test_each_scrape_reads_the_database_afresh(client):
    before = scrape(client)
    add("sandbox", Status.DEAD)

    after = scrape(client)

    assert ("paysys_messages_dead", labels(service="sandbox", queue="accounting")) not in before
    assert after[("paysys_messages_dead", labels(service="sandbox", queue="accounting"))] == 1


# --- cheap: the view's token and methods are tests/ops/test_metrics.py --------------------


def test_a_scrape_is_one_query_per_database_and_never_reads_consumed_rows(client):
    add("orders", Status.CONSUMED)
    captured = {alias: CaptureQueriesContext(connections[alias]) for alias in connections}
    for context in captured.values():
        context.__enter__()
    try:
        scrape(client)
    finally:
        for context in captured.values():
            context.__exit__(None, None, None)

    for alias, context in captured.items():
        outbox = [q["sql"] for q in context.captured_queries if "messaging_message" in q["sql"]]
        assert len(outbox) == 1, (alias, outbox)
        assert "CONSUMED" not in outbox[0] and "PREPARED" in outbox[0] and "DEAD" in outbox[0]
