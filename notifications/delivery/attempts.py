"""The attempt writer: a batch of finished requests becomes its attempt rows and moves its records
on, in a handful of statements in one transaction whatever the batch size (the statements, not
the requests, are what a delivery costs)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connections, transaction
from django.db.models import Case, F, Q, Value, When

from notifications.delivery.flight import InFlight
from notifications.delivery.outcomes import classify, next_wait
from notifications.models import Attempt, Endpoint, Notification
from notifications.services import ALIAS, retry_schedules
from paysys.core import http
from paysys.core.steps import log_steps

logger = logging.getLogger(__package__)  # "notifications.delivery"

Status = Notification.Status


@dataclass
class Recorded:
    succeeded: int = 0
    failed: int = 0  # attempts that failed (the record may still be PENDING)
    exhausted: int = 0  # records that became FAILED


@dataclass
class _Batch:
    """A batch's attempts, sorted by what each one changes."""

    attempts: list[Attempt] = field(default_factory=list)
    succeeded: dict[int, list[int]] = field(default_factory=dict)  # status code -> record ids
    failures: list[tuple[Notification, http.Response, str]] = field(default_factory=list)
    gone: dict[int, str] = field(default_factory=dict)  # endpoint id -> its URL that said 410
    endpoint_ok: dict[int, datetime] = field(default_factory=dict)
    endpoint_failed: dict[int, int] = field(default_factory=dict)  # endpoint id -> failures


def record_attempts(items: list[InFlight], *, now: datetime) -> Recorded:
    """Write the attempts of a batch and move each record on: a handful of statements in one
    transaction, whatever the batch size (successes in one UPDATE)."""
    batch = _sort(items)
    schedules = retry_schedules({record.merchant_id for record, _, _ in batch.failures})
    with transaction.atomic(using=ALIAS):
        _insert_attempts_of_live_records(batch.attempts)
        _mark_succeeded(batch.succeeded, now=now)
        _disable_gone(batch.gone, now=now)
        exhausted = _move_failed(batch.failures, batch.gone, schedules, now=now)
        _update_endpoint_health(batch.endpoint_ok, batch.endpoint_failed, now=now)
    if batch.gone:
        logger.warning("endpoint(s) disabled after 410 Gone: %s", ", ".join(batch.gone.values()))
    _log_delivered(items, batch.succeeded)
    for record, response, error in batch.failures:  # each failed attempt, as each success is
        logger.warning(
            "order %s: notifying merchant %s failed (%s, HTTP %s: %s); tried again on its schedule",
            record.out_trade_no,
            record.merchant_id,
            record.webhook_id,
            response.status_code or "-",
            error[:200],
        )
    return Recorded(
        succeeded=sum(len(ids) for ids in batch.succeeded.values()),
        failed=len(batch.failures),
        exhausted=exhausted,
    )


def _sort(items: list[InFlight]) -> _Batch:
    batch = _Batch()
    for item in items:
        record, response = item.record, item.response
        outcome, error_class, error = classify(response)
        batch.attempts.append(
            Attempt(
                notification_id=record.id,
                merchant_id=record.merchant_id,
                number=item.number,
                trigger=item.trigger,
                started_at=response.started_at,
                url=record.url,
                address=response.address,
                request_headers=item.headers,
                request_body=record.body,
                status_code=response.status_code,
                response_excerpt=response.excerpt,
                duration_ms=response.duration_ms,
                outcome=outcome,
                error_class=error_class,
                error=error[:2000],
            )
        )
        if outcome == Attempt.Outcome.SUCCEEDED:
            batch.succeeded.setdefault(response.status_code, []).append(record.id)
            batch.endpoint_ok[record.endpoint_id] = response.started_at
            continue
        failed = batch.endpoint_failed
        failed[record.endpoint_id] = failed.get(record.endpoint_id, 0) + 1
        if error_class == "gone":
            batch.gone[record.endpoint_id] = record.url
        batch.failures.append((record, response, error or error_class))
    return batch


def _insert_attempts_of_live_records(attempts: list[Attempt]) -> None:
    # a record deleted while its request was in flight (retention, a test's cleanup) has no
    # row for its attempt to belong to; it must not sink the batch (SQLite checks foreign
    # keys only at commit, so ask first rather than catch)
    alive = set(
        Notification.objects.using(ALIAS)
        .filter(id__in=[a.notification_id for a in attempts])
        .values_list("id", flat=True)
    )
    if len(alive) < len(attempts):
        logger.warning(
            "%d attempt(s) of deleted notifications dropped",
            sum(a.notification_id not in alive for a in attempts),
        )
    insert_attempts([a for a in attempts if a.notification_id in alive])


def insert_attempts(attempts: list[Attempt]) -> None:
    """``bulk_create`` without the query compiler: on the hot path (1,000+ rows a second) Django
    building the INSERT cost more CPU than the database took to run it. One multi-row INSERT."""
    if not attempts:
        return
    connection = connections[ALIAS]
    fields = [f for f in Attempt._meta.concrete_fields if not f.primary_key]
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        connection.ops.quote_name(Attempt._meta.db_table),
        ", ".join(connection.ops.quote_name(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    rows = [
        [f.get_db_prep_save(f.value_from_object(a), connection) for f in fields] for a in attempts
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _mark_succeeded(succeeded: dict[int, list[int]], *, now: datetime) -> None:
    for code, ids in succeeded.items():
        Notification.objects.using(ALIAS).filter(id__in=ids).transition(
            Status.SUCCEEDED,
            attempt_count=F("attempt_count") + 1,
            next_attempt_at=None,
            succeeded_at=now,
            last_status_code=code,
            last_error="",
            updated_at=now,
        )


def _disable_gone(gone: dict[int, str], *, now: datetime) -> None:
    for endpoint_id, url in gone.items():
        Endpoint.objects.using(ALIAS).filter(id=endpoint_id, disabled_at__isnull=True).update(
            disabled_at=now, disabled_reason=f"410 Gone from {url}"[:255]
        )


def _move_failed(
    failures: list[tuple[Notification, http.Response, str]],
    gone: dict[int, str],
    schedules: dict[int, list[int]],
    *,
    now: datetime,
) -> int:
    """Each failed record to its next step and due time, or to FAILED when its schedule ended or
    its endpoint is gone; returns how many became FAILED.

    Failures alike (same answer, same step) move in one UPDATE, each to its own jittered due
    time: a hanging merchant's timeouts arrive together and must not cost one statement each
    while other merchants wait."""
    groups: dict[tuple, dict[int, datetime | None]] = {}
    for record, response, error in failures:
        wait = (
            None
            if record.endpoint_id in gone
            else next_wait(schedules[record.merchant_id], record.step, response.retry_after)
        )
        key = (response.status_code, error[:2000], None if wait is None else record.step + 1)
        groups.setdefault(key, {})[record.id] = (
            None if wait is None else now + timedelta(seconds=wait)
        )
    exhausted = 0
    for (status_code, error, step), due in groups.items():
        changes = {
            "attempt_count": F("attempt_count") + 1,
            "last_status_code": status_code,
            "last_error": error,
            "updated_at": now,
        }
        # only a record still PENDING moves: a concurrent success (or a resend) wins
        records = Notification.objects.using(ALIAS).filter(id__in=list(due), status=Status.PENDING)
        if step is None:
            records.transition(Status.FAILED, next_attempt_at=None, **changes)
            exhausted += len(due)
        else:
            records.update(
                step=step,
                next_attempt_at=Case(
                    *(When(id=record_id, then=Value(at)) for record_id, at in due.items()),
                    output_field=Notification._meta.get_field("next_attempt_at"),
                ),
                **changes,
            )
    return exhausted


def _update_endpoint_health(
    endpoint_ok: dict[int, datetime], endpoint_failed: dict[int, int], *, now: datetime
) -> None:
    if endpoint_ok:
        # health to the second is enough: a busy endpoint's row is written about once a
        # second, not in every batch of every worker (they would queue on its row lock)
        Endpoint.objects.using(ALIAS).filter(id__in=list(endpoint_ok)).filter(
            Q(consecutive_failures__gt=0)
            | Q(last_success_at__isnull=True)
            | Q(last_success_at__lt=now - timedelta(seconds=1))
        ).update(consecutive_failures=0, last_attempt_at=now, last_success_at=now)
    for endpoint_id, n in endpoint_failed.items():
        if endpoint_id in endpoint_ok:
            continue  # it answers: one 2xx in the batch says it is up
        Endpoint.objects.using(ALIAS).filter(id=endpoint_id).update(
            consecutive_failures=F("consecutive_failures") + n, last_attempt_at=now
        )


def _log_delivered(items: list[InFlight], succeeded: dict[int, list[int]]) -> None:
    acknowledged = {record_id for ids in succeeded.values() for record_id in ids}
    log_steps(
        logger,
        "order %s: merchant %s notified (%s, HTTP %s, attempt %s)",
        [
            (
                item.record.out_trade_no,
                item.record.merchant_id,
                item.record.webhook_id,
                item.response.status_code,
                item.number,
            )
            for item in items
            if item.record.id in acknowledged
        ],
        using=ALIAS,
    )
