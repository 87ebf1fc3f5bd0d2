"""Retention: history older than an age is deleted in small batches, so payments never notice.

Each app registers what it may purge, and the rule that keeps the rest, in its
``AppConfig.ready()`` (this kernel module imports no app): the message service its consumed
outbox rows and their inbox rows (``paysys.messaging.retention``: the rule that keeps a message
from ever being applied twice lives there), notifications their attempts, the gateway its
processed bank-notify receipts. Beat runs :func:`purge_history` every minute on the
``maintenance`` queue (``paysys.purge_history``), ``manage.py purge_history --older-than 30d``
runs it by hand.

How a table is purged, without scanning what it keeps: the largest primary key older than the
cutoff is found by a binary search on the key (rows are numbered in the order they were
written, so their write time grows with the key: ~25 point reads for 10,000,000 rows); then the
keys up to it are read in ranges of ``RETENTION_BATCH_SIZE`` keys (a primary-key range, never a
scan of an index on the rule's columns), filtered by the table's rule, and deleted by key in one
statement, then a pause so long that the batches fill at most ``RETENTION_TIME_SHARE`` (a
fifth) of one connection's time (and at least ``RETENTION_PAUSE_SECONDS``). Each statement locks at
most one batch of old rows, which nothing on the payment path touches; the rows being written
now are never read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

# No history younger than this goes, whatever is asked: a message copy that a dying worker had
# taken comes back from the broker after its visibility timeout (one hour), and its inbox row
# must still be there to make it a duplicate (paysys.messaging.retention).
MIN_AGE = timedelta(days=1)


@dataclass(frozen=True)
class PurgeTable:
    """One table's purge. ``rows(cutoff)``: what may go (the table's rule; never anything
    younger than ``cutoff``); ``model_rows()``: every row, for finding the key boundary by
    ``written`` (the field holding when a row was written, never NULL). ``fields`` are read with
    each batch and handed to ``before_delete(batch, dry_run) -> {label: rows}``, which removes (or,
    dry, counts) what must go first; if it raises, the batch stays."""

    label: str
    model_rows: Callable[[], QuerySet]
    rows: Callable[..., QuerySet]
    written: str
    fields: tuple[str, ...] = ()
    before_delete: Callable[[list[tuple], bool], dict[str, int]] | None = None


TABLES: list[PurgeTable] = []


def register(table: PurgeTable) -> None:
    """Called from an app's ``ready()``; registering a label again replaces it."""
    TABLES[:] = [t for t in TABLES if t.label != table.label] + [table]


def parse_age(text: str) -> timedelta:
    """``30d`` or ``36h``."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([dh])\s*", text or "")
    if not match:
        raise ValueError(f"{text!r} is not an age: a number of days or hours, like 30d or 36h")
    number, unit = int(match[1]), match[2]
    return timedelta(days=number) if unit == "d" else timedelta(hours=number)


@dataclass
class PurgeResult:
    counts: dict[str, int] = field(
        default_factory=dict
    )  # rows deleted (or, dry, that would go) per label
    skipped: list[str] = field(default_factory=list)  # tables whose database did not answer
    complete: bool = True  # False: the time budget ran out first


def purge_history(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    budget_seconds: float | None = None,
    progress: Callable[[str, dict[str, int], bool], None] | None = None,
) -> PurgeResult:
    """Delete (``dry_run``: count) every registered table's rows older than ``older_than``.
    A table whose database does not answer is skipped (logged) and the others go on;
    ``budget_seconds`` ends the pass early (the next one goes on where it stopped).
    ``progress(label, counts so far, done)`` is called after every batch."""
    if older_than < MIN_AGE:
        raise ValueError(
            f"history younger than {MIN_AGE.days} day is kept: a message copy may still be on its way"
        )
    cutoff = timezone.now() - older_than
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    result = PurgeResult()
    for table in list(TABLES):
        try:
            counts, complete = _purge_table(
                table, cutoff, dry_run=dry_run, deadline=deadline, progress=progress
            )
        except DatabaseError:
            logger.warning("retention skipped %s: database unavailable", table.label, exc_info=True)
            result.skipped.append(table.label)
            continue
        result.complete &= complete
        for label, rows in counts.items():
            result.counts[label] = result.counts.get(label, 0) + rows
    return result


def _purge_table(
    table: PurgeTable, cutoff, *, dry_run: bool, deadline: float | None, progress
) -> tuple[dict[str, int], bool]:
    counts = {table.label: 0}
    every_row = table.model_rows()
    upto = _last_key_before(every_row, table.written, cutoff)
    rows = table.rows(cutoff)
    start, complete = every_row.order_by("pk").values_list("pk", flat=True).first(), True
    size = settings.RETENTION_BATCH_SIZE
    while upto is not None and start is not None and start <= upto:
        if deadline is not None and time.monotonic() >= deadline:
            complete = False
            break
        end = min(start + size - 1, upto)
        # a primary-key range of at most ``size`` keys, then the table's rule: the database reads
        # these keys and nothing else, whatever its statistics say about the rule's columns
        began = time.monotonic()
        batch = list(
            rows.filter(pk__gte=start, pk__lte=end).order_by("pk").values_list("pk", *table.fields)
        )
        if batch:
            if table.before_delete is not None:
                for label, n in table.before_delete(batch, dry_run).items():
                    counts[label] = counts.get(label, 0) + n
            keys = [row[0] for row in batch]
            # the rule again in the DELETE itself: a row that changed since it was read stays
            counts[table.label] += len(keys) if dry_run else rows.filter(pk__in=keys).delete()[0]
            if progress:
                progress(table.label, counts, False)
            if not dry_run:
                time.sleep(_pause_after(time.monotonic() - began))
        # on to the next row that exists: keys freed by earlier passes are skipped in one seek
        start = (
            every_row.filter(pk__gt=end, pk__lte=upto)
            .order_by("pk")
            .values_list("pk", flat=True)
            .first()
        )
    if progress:
        progress(table.label, counts, True)
    return counts, complete


def _pause_after(took: float) -> float:
    """How long to rest after a batch that took ``took`` seconds, so that batches fill at most
    ``RETENTION_TIME_SHARE`` of the connection's time."""
    share = settings.RETENTION_TIME_SHARE  # (0, 1]: paysys.E006
    return max(settings.RETENTION_PAUSE_SECONDS, took * (1 - share) / share)


def _last_key_before(every_row: QuerySet, written: str, cutoff) -> int | None:
    """The largest primary key of a row written before ``cutoff``, found by a binary search on
    the key: O(log n) indexed reads. Rows written concurrently may be numbered a little out of
    time order; the boundary only bounds the scan, each table's rule decides what goes."""
    first = every_row.order_by("pk").values_list("pk", written).first()
    if first is None or first[1] >= cutoff:
        return None
    last = every_row.order_by("-pk").values_list("pk", written).first()
    if last[1] < cutoff:
        return last[0]
    below, above = first[0], last[0]  # a row written before the cutoff; none from here up is
    while above - below > 1:
        middle = (below + above) // 2
        row = (
            every_row.filter(pk__gte=middle, pk__lt=above)
            .order_by("pk")
            .values_list("pk", written)
            .first()
        )
        if row is None:
            above = middle
        elif row[1] < cutoff:
            below = row[0]
        else:
            above = row[0]
    return below
