"""Outbox health, for Prometheus (``OutboxCollector``, served at ``GET /metrics`` by
paysys/ops/metrics.py) and the admin dashboard.

Everything is read from the outbox tables at scrape time (the database is the source of truth).
The ``service`` label is the database alias that owns the outbox (``default`` is core). An
unreachable database is skipped and reported as ``paysys_database_up{alias="..."} 0``; it never
turns the scrape into a 500.

A scrape is one grouped query per alias over the rows not yet CONSUMED (index ``status, queue``):
its cost follows the backlog, never the consumed history, whose size would also tell anyone
reading it the business volume.

    paysys_messages{service,queue,status}          PREPARED, SENDING and DEAD rows
    paysys_messages_dead{service,queue}            DEAD rows: a human must look (admin, "Resend")
    paysys_message_oldest_pending_seconds{service} age of the oldest PREPARED or SENDING row, 0 if none
    paysys_message_resends{service}                sum of max(send_count - 1, 0) over the rows not consumed
                                                   (a gauge: an admin resend restarts a row's count)
    paysys_database_up{alias}                      1 when the alias answered, else 0

The first two report every known (service, queue), 0 when idle: each contract's producer with
each registered consumer queue of its topic (``known_outbox_queues``), so a dashboard's ``sum()``
and ``absent()`` see them on a healthy system; and any other queue that has rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from paysys.contracts import contracts
from paysys.messaging.models import Message
from paysys.messaging.registry import consumers_of

logger = logging.getLogger(__name__)

Status = Message.Status
PENDING = (Status.PREPARED, Status.SENDING)
NOT_CONSUMED = (Status.PREPARED, Status.SENDING, Status.DEAD)


@dataclass
class OutboxStats:
    """One alias's outbox at a moment."""

    alias: str
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, status) -> rows
    oldest_pending_at: datetime | None = None
    oldest_pending_by_queue: dict[str, datetime] = field(
        default_factory=dict
    )  # the scrape's (consumed=False)
    resends: int = 0

    @property
    def queues(self) -> list[str]:
        return sorted({queue for queue, _ in self.counts})

    def count(self, queue: str, status: str) -> int:
        return self.counts.get((queue, status), 0)

    def oldest_pending_seconds(self, now: datetime) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return max((now - self.oldest_pending_at).total_seconds(), 0.0)


def outbox_stats(alias: str, *, consumed: bool = True) -> OutboxStats:
    """Counts by (queue, status), the oldest pending row and the resend total of one alias.

    Two queries over the whole outbox for the admin's dashboard; with ``consumed=False`` (the
    scrape) one grouped query over the rows not consumed. Raises DatabaseError when the alias is
    unreachable.
    """
    messages = Message.objects.using(alias)
    if not consumed:
        return _backlog_stats(alias, messages.filter(status__in=NOT_CONSUMED))
    counts = {
        (queue, status): n
        for queue, status, n in messages.order_by()
        .values_list("queue", "status")
        .annotate(n=Count("id"))
    }
    # sum(send_count) - count over rows sent at least once == sum(max(send_count - 1, 0)),
    # without ever computing 0 - 1 on an unsigned column (MySQL refuses that)
    totals = messages.aggregate(
        oldest=Min("created_at", filter=Q(status__in=PENDING)),
        sends=Sum("send_count", filter=Q(send_count__gt=0)),
        sent_rows=Count("id", filter=Q(send_count__gt=0)),
    )
    return OutboxStats(
        alias=alias,
        counts=counts,
        oldest_pending_at=totals["oldest"],
        resends=(totals["sends"] or 0) - totals["sent_rows"],
    )


def _backlog_stats(alias: str, rows) -> OutboxStats:
    stats = OutboxStats(alias=alias)
    groups = (
        rows.order_by()
        .values_list("queue", "status")
        .annotate(
            n=Count("id"),
            oldest=Min("created_at"),
            sends=Sum("send_count", filter=Q(send_count__gt=0)),
            sent_rows=Count("id", filter=Q(send_count__gt=0)),
        )
    )
    for queue, status, n, oldest, sends, sent_rows in groups:
        stats.counts[(queue, status)] = n
        stats.resends += (sends or 0) - sent_rows
        if status in PENDING and (
            stats.oldest_pending_at is None or oldest < stats.oldest_pending_at
        ):
            stats.oldest_pending_at = oldest
        if status in PENDING and (
            queue not in stats.oldest_pending_by_queue
            or oldest < stats.oldest_pending_by_queue[queue]
        ):
            stats.oldest_pending_by_queue[queue] = oldest
    return stats


def outbox_stats_by_alias(
    aliases: list[str] | None = None, *, consumed: bool = True
) -> dict[str, OutboxStats | None]:
    """Every alias's stats; ``None`` for an alias whose database did not answer."""
    result: dict[str, OutboxStats | None] = {}
    for alias in aliases if aliases is not None else list(settings.DATABASES):
        try:
            result[alias] = outbox_stats(alias, consumed=consumed)
        except DatabaseError:
            logger.warning(
                "outbox stats skipped alias %s: database unavailable", alias, exc_info=True
            )
            result[alias] = None
    return result


def known_outbox_queues() -> dict[str, set[str]]:
    """alias -> the consumer queues its outbox sends to: each contract's producer, with every
    registered consumer of its topic."""
    known: dict[str, set[str]] = {}
    for contract in contracts():
        known.setdefault(contract.PRODUCER, set()).update(
            c.queue for c in consumers_of(contract.TOPIC)
        )
    return known


class OutboxCollector(Collector):
    def __init__(self, aliases: list[str] | None = None):
        self.aliases = aliases

    def collect(self):
        now = timezone.now()
        messages = GaugeMetricFamily(
            "paysys_messages", "Outbox rows by state.", labels=["service", "queue", "status"]
        )
        dead = GaugeMetricFamily(
            "paysys_messages_dead",
            "DEAD outbox rows, waiting for a human.",
            labels=["service", "queue"],
        )
        oldest = GaugeMetricFamily(
            "paysys_message_oldest_pending_seconds",
            "Age of the oldest PREPARED or SENDING row.",
            labels=["service"],
        )
        resends = GaugeMetricFamily(
            "paysys_message_resends",
            "Sends beyond the first, summed over the outbox rows.",
            labels=["service"],
        )
        up = GaugeMetricFamily(
            "paysys_database_up",
            "Whether the database alias answered this scrape.",
            labels=["alias"],
        )
        known = known_outbox_queues()
        for alias, stats in outbox_stats_by_alias(self.aliases, consumed=False).items():
            up.add_metric([alias], 0 if stats is None else 1)
            if stats is None:
                continue
            for queue in sorted(known.get(alias, set()) | set(stats.queues)):
                for status in NOT_CONSUMED:
                    messages.add_metric([alias, queue, status], stats.count(queue, status))
                dead.add_metric([alias, queue], stats.count(queue, Status.DEAD))
            oldest.add_metric([alias], stats.oldest_pending_seconds(now))
            resends.add_metric([alias], stats.resends)
        yield from (messages, dead, oldest, resends, up)
