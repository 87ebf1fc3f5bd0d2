"""``manage.py bench_history``: history in a benchmark's databases, only there, and reconcile
stays consistent over it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from orders.models import Order
from paysys.core import retention
from paysys.core.services import merchant_create
from paysys.messaging.models import InboxEntry, Message
from paysys.reconcile.checks import reconcile

pytestmark = pytest.mark.django_db(databases="__all__")
ALIASES = ("default", "orders", "funds", "points", "accounting", "notifications", "sandbox")


def _history() -> tuple[int, int, int]:
    consumed = sum(
        Message.objects.using(a)
        .filter(status="CONSUMED", business_key__startswith="history:")
        .count()
        for a in ALIASES
    )
    return (
        Order.objects.filter(out_trade_no__startswith="BR", status="SUCCESS").count(),
        consumed,
        sum(InboxEntry.objects.using(a).count() for a in ALIASES),
    )


def test_it_fills_a_benchmarks_databases_and_tops_them_up(settings):
    merchant_create(name="bench-1", notify_url="http://127.0.0.1:9/n")  # bench_payments ran here
    settings.DEBUG = True

    call_command(
        "bench_history", "--orders", "30", "--messages", "40", "--merchants", "3", "--payers", "7"
    )

    assert _history() == (30, 40, 40)
    report = reconcile(grace=0)
    assert report.consistent and report.checked["paid orders"] == 30
    call_command(
        "bench_history", "--orders", "50", "--messages", "40", "--merchants", "3", "--payers", "7"
    )
    assert _history() == (50, 40, 40)  # topped up to the totals, nothing inserted twice
    report = reconcile(grace=0)
    assert report.consistent and report.checked["paid orders"] == 50


def test_messages_aged_past_the_retention_are_a_backlog_that_purge_history_deletes(settings):
    merchant_create(name="bench-1", notify_url="http://127.0.0.1:9/n")
    settings.DEBUG, settings.RETENTION_PAUSE_SECONDS, settings.RETENTION_TIME_SHARE = True, 0, 1
    call_command("bench_history", "--messages", "18", "--age-days", "40")
    call_command("bench_history", "--messages", "30")  # 12 more, an hour old: kept

    assert _history() == (0, 30, 30)
    assert _purged_messages() == 18 and _history() == (0, 12, 12)
    # old messages stored after newer ones would be numbered after them: out of retention's reach
    with pytest.raises(CommandError, match="before any bench_payments run"):
        call_command("bench_history", "--messages", "40", "--age-days", "40")
    assert _history() == (0, 12, 12)


def _purged_messages() -> int:
    counts = retention.purge_history(older_than=timedelta(days=30)).counts
    return sum(n for label, n in counts.items() if label.startswith("messages ("))


def test_it_refuses_a_database_without_the_bench_marker_or_with_debug_off(settings):
    settings.DEBUG = True
    with pytest.raises(CommandError, match="no bench marker"):
        call_command("bench_history", "--orders", "5")
    merchant_create(name="bench-1", notify_url="http://127.0.0.1:9/n")
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        call_command("bench_history", "--orders", "5")
    assert _history() == (0, 0, 0)

    call_command(
        "bench_history",
        "--orders",
        "5",
        "--merchants",
        "2",
        "--payers",
        "2",
        "--yes-fill-this-database",
    )
    assert _history()[0] == 5


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_it_times_metrics(live_server, settings, capsys):
    settings.PUBLIC_BASE_URL, settings.METRICS_TOKEN = live_server.url, "t" * 32

    call_command("bench_history", "--metrics", "3", "--json")

    assert '"metrics_ms": {"n": 3, "p50": ' in capsys.readouterr().out
