"""``manage.py bench_history``: history in a benchmark's databases, only there, and reconcile
stays consistent over it."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from orders.models import Order
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
