"""Counts per minute over the last hour, for the admin overview's charts.

One grouped query per series over an indexed time column (``TruncMinute`` in the database), so
its cost follows the hour's rows, never the history kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncMinute

MINUTES = 60


def window_start(now: datetime) -> datetime:
    """The first minute of the hour that ends with ``now``'s minute."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)


def per_minute(
    rows: QuerySet, field: str, *, now: datetime, by: str | None = None
) -> dict[str, list[int]]:
    """``by`` value (``""`` without ``by``) -> row counts of ``rows`` per minute of ``field``,
    oldest minute first, ``MINUTES`` of them ending with ``now``'s minute."""
    start = window_start(now)
    grouped = (
        rows.filter(**{f"{field}__gte": start})
        .order_by()
        .annotate(minute=TruncMinute(field, tzinfo=UTC))
        .values_list("minute", *([by] if by else []))
        .annotate(n=Count("pk"))
    )
    series: dict[str, list[int]] = {}
    for minute, *label, n in grouped:
        index = int((minute - start).total_seconds() // 60)
        if 0 <= index < MINUTES:
            series.setdefault(label[0] if label else "", [0] * MINUTES)[index] += n
    return series
