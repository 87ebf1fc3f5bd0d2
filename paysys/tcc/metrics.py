"""TCC health for Prometheus, served at ``GET /metrics`` (paysys/ops/metrics.py).

Read from the coordinator's tables at scrape time, in a fresh registry per request (like the
outbox metrics). ``default`` unreachable: these families are simply absent from the scrape
(``paysys_database_up{alias="default"} 0`` from the outbox collector says why), never a 500.

    paysys_tcc_transactions{name,status}     open global transactions by state (TRYING, CONFIRMING,
                                             CANCELLING): final ones are history, not counted per
                                             scrape (that would read every row ever written)
    paysys_tcc_needs_human{name}             transactions flagged for a human (admin: retry now)

Both report every declared transaction name (``tcc.transaction_names``), 0 when idle, and any
other name that has open or flagged rows.
    paysys_tcc_phase_two_lag_seconds         age of the oldest decision whose phase two is unfinished, 0 if none
    paysys_tcc_oldest_trying_seconds         age of the oldest TRYING transaction, 0 if none
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from paysys.tcc.models import GlobalTransaction
from paysys.tcc.registry import transaction_names

logger = logging.getLogger(__name__)

Status = GlobalTransaction.Status


OPEN = (Status.TRYING, *GlobalTransaction.PHASE_TWO)


def tcc_stats() -> dict:
    """Open transactions by (name, status), needs-human counts by name, oldest decision and try:
    each query reads only open or flagged rows, through an index. Raises DatabaseError when
    ``default`` is unreachable."""
    rows = (
        GlobalTransaction.objects.filter(status__in=OPEN)
        .order_by()
        .values_list("name", "status")
        .annotate(n=Count("id"))
    )
    flagged = (
        GlobalTransaction.objects.filter(needs_human=True)
        .order_by()
        .values_list("name")
        .annotate(n=Count("id"))
    )
    oldest = GlobalTransaction.objects.filter(status__in=GlobalTransaction.PHASE_TWO).aggregate(
        at=Min("decided_at")
    )["at"]
    trying = GlobalTransaction.objects.filter(status=Status.TRYING).aggregate(at=Min("created_at"))[
        "at"
    ]
    return {
        "counts": {(name, status): n for name, status, n in rows},
        "needs_human": dict(flagged),
        "oldest_decision_at": oldest,
        "oldest_trying_at": trying,
    }


def _age(now, at) -> float:
    return 0.0 if at is None else max((now - at).total_seconds(), 0.0)


class TccCollector(Collector):
    def collect(self):
        try:
            stats = tcc_stats()
        except DatabaseError:
            logger.warning("TCC metrics skipped: default database unavailable", exc_info=True)
            return
        now = timezone.now()
        transactions = GaugeMetricFamily(
            "paysys_tcc_transactions",
            "Open TCC global transactions by state.",
            labels=["name", "status"],
        )
        names = sorted(
            {name for name, _ in stats["counts"]}
            | set(stats["needs_human"])
            | set(transaction_names())
        )
        for name in names:
            for status in OPEN:
                transactions.add_metric([name, status], stats["counts"].get((name, status), 0))
        flagged = GaugeMetricFamily(
            "paysys_tcc_needs_human", "TCC transactions flagged for a human.", labels=["name"]
        )
        for name in names:
            flagged.add_metric([name], stats["needs_human"].get(name, 0))
        lag = GaugeMetricFamily(
            "paysys_tcc_phase_two_lag_seconds",
            "Age of the oldest decided TCC transaction whose phase two is unfinished.",
        )
        lag.add_metric([], _age(now, stats["oldest_decision_at"]))
        trying = GaugeMetricFamily(
            "paysys_tcc_oldest_trying_seconds", "Age of the oldest TRYING TCC transaction."
        )
        trying.add_metric([], _age(now, stats["oldest_trying_at"]))
        yield from (transactions, flagged, lag, trying)
