"""The relay: claim due SENDING rows, count the send, ship them to their consumers' queues in
batches (one Celery task per batch, not per message); past the resend schedule -> DEAD.

A kicked pass is *paced* (``paced=True``): it ships to a queue only while no batch of this alias
is in flight there, one batch of up to BATCH_SIZE, and the consume task frees the queue and kicks
the next pass when it ends. Without pacing, a consumer slower than the producer would find the
broker full of one-message tasks (a pass runs after each commit and ships what is due then), and
pay its fixed costs per message. Paced, what arrives while a batch is consumed waits in the
outbox and goes as the next batch: batches grow with the backlog. A slot is a cache key with a
TTL (``MESSAGE_BATCH_IN_FLIGHT_TTL``), so a worker that dies mid-batch holds its queue only that
long; recovery passes (unpaced) resend overdue rows whatever is in flight.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction
from django.db.models import Case, F, TextField, Value, When
from django.utils import timezone

from paysys.core.kicks import send_task
from paysys.messaging.models import Message

logger = logging.getLogger(__name__)

Status = Message.Status
BATCH_SIZE = 100  # messages per consume task
_WAITING_QUEUES = f"SELECT DISTINCT queue FROM {Message._meta.db_table} WHERE status = %s"
CLAIM_LIMIT = 1000  # rows claimed per relay pass and alias


def resend_schedule() -> list[int]:
    """Seconds to wait after the 1st, 2nd, ... send before resending; past the end -> DEAD."""
    return list(settings.MESSAGE_RESEND_SCHEDULE)


def slot_key(alias: str, queue: str) -> str:
    """The cache key held while a paced batch of ``alias`` is being consumed on ``queue``."""
    return f"messaging:in-flight:{alias}:{queue}"


def relay_due(alias: str, *, limit: int = CLAIM_LIMIT, now=None, paced: bool = False) -> int:
    """Claim the due SENDING rows of ``alias``, count the send, and ship them. Returns rows sent.

    Rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED (SQLite serialises writers instead),
    and their next due time is moved forward in the same transaction, so concurrent passes on
    several machines never send the same row twice in one round. ``paced``: one batch per queue
    with no batch in flight (module docstring).
    """
    if not paced:
        return _relay(alias, Message.objects.using(alias), limit=limit, now=now)
    sent = 0
    # the queues this outbox has work for (one read of the (status, queue) index), not every queue
    # some consumer listens on: a claim per idle queue would be a transaction for nothing
    # (after every producer's commit: plain SQL, the ORM's statement building cost more than it)
    with connections[alias].cursor() as cursor:
        cursor.execute(_WAITING_QUEUES, [Status.SENDING])
        waiting = sorted(queue for (queue,) in cursor.fetchall())
    for queue in waiting:
        key = slot_key(alias, queue)
        try:
            if not cache.add(key, 1, timeout=settings.MESSAGE_BATCH_IN_FLIGHT_TTL):
                continue  # a batch is being consumed: what is due now goes with the next one
        except Exception:  # noqa: BLE001 - no cache: ship unpaced rather than not at all
            key = None
        shipped = _relay(
            alias,
            Message.objects.using(alias).filter(queue=queue),
            limit=BATCH_SIZE,
            now=now,
            slot=key,
        )
        if not shipped and key:
            cache.delete(key)
        sent += shipped
    return sent


def _relay(alias: str, messages, *, limit: int, now=None, slot: str | None = None) -> int:
    now = now or timezone.now()
    schedule = resend_schedule()
    with transaction.atomic(using=alias):
        rows = list(
            messages.select_for_update(skip_locked=True)
            .filter(status=Status.SENDING, next_send_at__lte=now)
            .order_by("next_send_at")
            .only("id", "message_id", "topic", "consumer", "queue", "payload", "send_count")[:limit]
        )
        exhausted = [r.id for r in rows if r.send_count >= len(schedule)]
        if exhausted:
            # a consumer's failure stays as the last error; a message no consumer ever answered says so
            unanswered = f"not consumed after {len(schedule)} sends: no consumer answered (is its queue's worker running?)"
            Message.objects.using(alias).filter(id__in=exhausted).transition(
                Status.DEAD,
                next_send_at=None,
                last_error=Case(
                    When(last_error="", then=Value(unanswered)),
                    default=F("last_error"),
                    output_field=TextField(),
                ),
            )
            logger.error(
                "%d message(s) in %s are DEAD after %d sends", len(exhausted), alias, len(schedule)
            )
        rows = [r for r in rows if r.send_count < len(schedule)]
        by_count: dict[int, list[int]] = {}
        for row in rows:
            by_count.setdefault(row.send_count, []).append(row.id)
        for count, ids in by_count.items():
            wait = schedule[count + 1] if count + 1 < len(schedule) else schedule[-1]
            Message.objects.using(alias).filter(id__in=ids).update(
                send_count=F("send_count") + 1, next_send_at=now + timedelta(seconds=wait)
            )
    if rows:
        unsent = _ship(alias, rows, slot=slot)
        if unsent:
            # the broker refused them: that was no send, so it must not bring them nearer DEAD
            Message.objects.using(alias).filter(id__in=unsent, status=Status.SENDING).update(
                send_count=F("send_count") - 1,
                next_send_at=timezone.now()
                + timedelta(seconds=settings.MESSAGE_BROKER_RETRY_SECONDS),
            )
        return len(rows) - len(unsent)
    return 0


def _ship(alias: str, rows: list[Message], *, slot: str | None = None) -> list[int]:
    """Publish the rows to their queues, 100 per task (a paced pass: one task, which frees
    ``slot`` when it ends). Returns the ids the broker did not take."""
    by_queue: dict[str, list[dict]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(
            {
                "id": row.id,
                "message_id": str(row.message_id),
                "topic": row.topic,
                "consumer": row.consumer,
                "payload": row.payload,
                "send_count": row.send_count + 1,
            }
        )
    batches = [
        (queue, deliveries[start : start + BATCH_SIZE])
        for queue, deliveries in by_queue.items()
        for start in range(0, len(deliveries), BATCH_SIZE)
    ]
    shipped = 0
    try:
        with current_app.producer_or_acquire() as producer:
            for queue, batch in batches:
                send_task(
                    "messaging.consume",
                    args=[alias, batch],
                    kwargs={"slot": slot} if slot else {},
                    queue=queue,
                    producer=producer,
                )
                shipped += 1
    except Exception:  # the rest stay SENDING: recovery resends them once the broker is back
        unsent = [d["id"] for _, batch in batches[shipped:] for d in batch]
        logger.warning(
            "broker unavailable; %d message(s) from %s wait for recovery",
            len(unsent),
            alias,
            exc_info=True,
        )
        if slot:
            cache.delete(slot)
        return unsent
    return []
