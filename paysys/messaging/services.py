"""The reliable message service: outbox, relay, consumption, acknowledgement, recovery.

Life of a message (one outbox row per consumer, in the producer's alias):

    publish() in the producer's transaction        -> SENDING, due now
    (or prepare() -> PREPARED, confirm() -> SENDING; discard() deletes it)
    relay_due(): claim due rows, count the send, set the next due time, send batches to the
                 consumers' queues after commit (one Celery task per batch, not per message)
    consume_batch(): each message in its consumer's transaction with its inbox row; then one
                 acknowledgement UPDATE for the batch -> CONSUMED
    a message still SENDING when due again is resent on the schedule; past it -> DEAD

The database is the source of truth: whatever the broker loses, the next relay pass resends.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from paysys.messaging import registry
from paysys.messaging.models import InboxEntry, Message

logger = logging.getLogger(__name__)

Status = Message.Status
BATCH_SIZE = 100  # messages per consume task
CLAIM_LIMIT = 1000  # rows claimed per relay pass and alias


@dataclass(frozen=True)
class Delivery:
    """What a consumer's handler receives."""

    id: int
    message_id: uuid.UUID
    topic: str
    payload: dict
    send_count: int


class UnknownTopic(ValueError):
    pass


def resend_schedule() -> list[int]:
    """Seconds to wait after the 1st, 2nd, ... send before resending; past the end -> DEAD."""
    return list(settings.MESSAGE_RESEND_SCHEDULE)


def _rows(topic: str, payload: dict, *, status: str, due, **extra) -> list[Message]:
    consumers = registry.consumers_of(topic)
    if not consumers:
        raise UnknownTopic(f"no consumer is registered for topic {topic!r}")
    message_id = uuid.uuid4()
    return [
        Message(
            message_id=message_id, topic=topic, consumer=c.name, queue=c.queue, payload=payload,
            status=status, next_send_at=due, **extra,
        )
        for c in consumers
    ]


def publish(topic: str, payload: dict, *, using: str) -> uuid.UUID:
    """Write the message to ``using``'s outbox inside the caller's transaction.

    Must be called inside ``transaction.atomic(using=using)``: the message exists if and only if
    the business change commits. Delivery is kicked after commit, never before.
    """
    if not transaction.get_connection(using).in_atomic_block:
        raise RuntimeError("publish() must run inside the producer's transaction.atomic(using=...)")
    now = timezone.now()
    rows = Message.objects.using(using).bulk_create(
        _rows(topic, payload, status=Status.SENDING, due=now, confirmed_at=now)
    )
    transaction.on_commit(lambda: request_relay(using), using=using, robust=True)
    return rows[0].message_id


# --- two-phase: for producers that cannot write the outbox in their own transaction --------


class DuplicateBusinessKey(ValueError):
    """A prepare replayed for the same (topic, business key) with a different payload."""


def prepare(topic: str, payload: dict, *, using: str = "default", business_key: str, check_back: str) -> uuid.UUID:
    """Store a PREPARED message; it is sent only when confirmed. ``check_back`` names a
    registered resolver or is the producer's URL, asked if no confirm/discard comes in time.

    Idempotent on (topic, business key): a producer retrying after a lost answer gets the same
    message back, so a committed transaction is never announced twice.
    """
    producer_key = f"{topic}:{business_key}"
    due = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY)
    rows = _rows(topic, payload, status=Status.PREPARED, due=due, business_key=business_key,
                 check_back=check_back, producer_key=producer_key)
    try:
        with transaction.atomic(using=using):
            Message.objects.using(using).bulk_create(rows)
        return rows[0].message_id
    except IntegrityError:
        existing = Message.objects.using(using).filter(producer_key=producer_key).first()
        if existing is None:
            raise
        if existing.payload != payload:
            raise DuplicateBusinessKey(f"business key {business_key!r} was prepared with another payload") from None
        return existing.message_id


def _unconfirmed(message_id: uuid.UUID, using: str):
    """PREPARED rows, and DEAD ones that were never confirmed (check-back stayed undecided)."""
    return Message.objects.using(using).filter(
        message_id=message_id, status__in=[Status.PREPARED, Status.DEAD], confirmed_at__isnull=True
    )


def confirm(message_id: uuid.UUID, *, using: str = "default") -> int:
    """-> SENDING, due now. Idempotent: confirming twice (or a sent message) changes nothing."""
    now = timezone.now()
    with transaction.atomic(using=using):
        confirmed = _unconfirmed(message_id, using).update(
            status=Status.SENDING, send_count=0, next_send_at=now, confirmed_at=now
        )
        if confirmed:
            transaction.on_commit(lambda: request_relay(using), using=using, robust=True)
    return confirmed


def discard(message_id: uuid.UUID, *, using: str = "default") -> int:
    """Drop an unconfirmed message (its producer's transaction rolled back). Sent messages stay."""
    deleted, _ = _unconfirmed(message_id, using).delete()
    return deleted


# --- relay: outbox -> broker, batched ------------------------------------------------------


class _Kicker:
    """Sends relay kicks from a background thread of this process, so a producer's commit never
    waits on the cache or the broker (a hung Redis must not hang the bank's notify), and the
    kicks of many commits in the same few milliseconds become one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._pid: int | None = None

    def request(self, alias: str) -> None:
        with self._lock:
            self._pending.add(alias)
            self._idle.clear()
            if self._pid != os.getpid():  # first kick in this process, or in a forked child
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="paysys-relay-kicker", daemon=True).start()
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested kick was sent (for short-lived producers before they exit)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                aliases, self._pending = self._pending, set()
            for alias in aliases:
                kick_relay(alias)
            with self._lock:
                if not self._pending:
                    self._idle.set()


_kicker = _Kicker()
atexit.register(_kicker.flush)


def request_relay(alias: str) -> None:
    """After a commit: have the relay of ``alias`` run soon, without waiting for it."""
    _kicker.request(alias)


def flush_relay_requests(timeout: float = 5.0) -> bool:
    return _kicker.flush(timeout)


def kick_relay(alias: str) -> None:
    """Ask for a relay pass on ``alias`` soon. Kicks arriving while one is pending coalesce, so
    one pass ships the messages of many transactions; a lost kick only waits for recovery."""
    from paysys.messaging.tasks import relay

    key = f"messaging:kick:{alias}"
    try:
        if not cache.add(key, 1, timeout=settings.MESSAGE_KICK_TTL):
            return
        relay.apply_async(args=[alias], queue=registry.queue_for_alias(alias), retry=False)
    except Exception:  # cache or broker down: the committed messages wait for the recovery pass
        logger.warning("relay kick for %s not sent; recovery will deliver", alias, exc_info=True)
        try:
            cache.delete(key)
        except Exception:  # noqa: BLE001 - the key expires on its own
            pass


def relay_due(alias: str, *, limit: int = CLAIM_LIMIT, now=None) -> int:
    """Claim the due SENDING rows of ``alias``, count the send, and ship them. Returns rows sent.

    Rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED (SQLite serialises writers instead),
    and their next due time is moved forward in the same transaction, so concurrent passes on
    several machines never send the same row twice in one round.
    """
    now = now or timezone.now()
    schedule = resend_schedule()
    with transaction.atomic(using=alias):
        rows = list(
            Message.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(status=Status.SENDING, next_send_at__lte=now)
            .order_by("next_send_at")
            .only("id", "message_id", "topic", "consumer", "queue", "payload", "send_count")[:limit]
        )
        exhausted = [r.id for r in rows if r.send_count >= len(schedule)]
        if exhausted:
            Message.objects.using(alias).filter(id__in=exhausted).update(status=Status.DEAD, next_send_at=None)
            logger.error("%d message(s) in %s are DEAD after %d sends", len(exhausted), alias, len(schedule))
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
        unsent = _ship(alias, rows)
        if unsent:
            # the broker refused them: that was no send, so it must not bring them nearer DEAD
            Message.objects.using(alias).filter(id__in=unsent).update(
                send_count=F("send_count") - 1,
                next_send_at=timezone.now() + timedelta(seconds=settings.MESSAGE_BROKER_RETRY_SECONDS),
            )
        return len(rows) - len(unsent)
    return 0


def _ship(alias: str, rows: list[Message]) -> list[int]:
    """Publish the rows to their queues, 100 per task. Returns the ids the broker did not take."""
    from paysys.messaging.tasks import consume

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
        with consume.app.producer_or_acquire() as producer:
            for queue, batch in batches:
                consume.apply_async(args=[alias, batch], queue=queue, producer=producer)
                shipped += 1
    except Exception:  # the rest stay SENDING: recovery resends them once the broker is back
        unsent = [d["id"] for _, batch in batches[shipped:] for d in batch]
        logger.warning("broker unavailable; %d message(s) from %s wait for recovery", len(unsent), alias, exc_info=True)
        return unsent
    return []


# --- consumption and acknowledgement -------------------------------------------------------


def consume_batch(origin: str, deliveries: Iterable[dict]) -> dict[str, list[int]]:
    """Process each delivery once, with its inbox row; acknowledge the batch.

    Each message runs in a savepoint of one transaction per consumer database, committed once for
    the batch: a message's writes and its inbox row stand or fall together, a handler that raises
    rolls back only its own savepoint (its message stays SENDING with the error), and nothing is
    acknowledged before the commit that makes it durable. A duplicate (inbox row exists) is
    acknowledged without running the handler.
    """
    acked: list[int] = []
    failed: dict[int, str] = {}
    by_alias: dict[str, list[tuple[registry.Consumer, Delivery]]] = {}
    for item in deliveries:
        try:
            spec = registry.get_consumer(item["consumer"])
        except KeyError:
            failed[item["id"]] = f"no consumer {item['consumer']!r} is registered in this worker"
            continue
        delivery = Delivery(item["id"], uuid.UUID(item["message_id"]), item["topic"], item["payload"], item["send_count"])
        if not spec.atomic:  # runs alone, outside any transaction (registry.consumer)
            error = _consume_outside(spec, delivery)
            if error:
                failed[delivery.id] = error
            else:
                acked.append(delivery.id)
            continue
        by_alias.setdefault(spec.alias, []).append((spec, delivery))
    for alias, batch in by_alias.items():
        done: list[int] = []
        try:
            with transaction.atomic(using=alias):
                for spec, delivery in batch:
                    error = _consume_one(spec, delivery)
                    if error:
                        failed[delivery.id] = error
                    else:
                        done.append(delivery.id)
                if transaction.get_connection(alias).needs_rollback:  # a savepoint could not be rolled back
                    raise DatabaseError("the consumer's transaction was lost (e.g. a deadlock rolled it back)")
        except Exception:  # noqa: BLE001 - the batch did not commit: none of it happened
            # one message must not sink the others (a deadlock victim, a handler that breaks the
            # transaction): go again, each message in a transaction of its own
            logger.warning("batch of %d message(s) in %s did not commit; retrying one by one", len(batch), alias)
            done = []
            for spec, delivery in batch:  # all of them: a failure inside a lost batch proves nothing
                failed.pop(delivery.id, None)
                error = _consume_alone(spec, delivery)
                if error:
                    failed[delivery.id] = error
                else:
                    done.append(delivery.id)
        acked.extend(done)
    acknowledge(origin, acked)
    record_failures(origin, failed)
    return {"acked": acked, "failed": sorted(failed)}


def _consume_alone(spec: registry.Consumer, delivery: Delivery) -> str:
    try:
        with transaction.atomic(using=spec.alias):
            error = _consume_one(spec, delivery)
            if transaction.get_connection(spec.alias).needs_rollback:
                raise DatabaseError("the consumer's transaction was lost")
        return error
    except Exception as exc:  # noqa: BLE001 - recorded on the message, resent on schedule
        return f"not committed: {_describe(exc)}"


def _consume_outside(spec: registry.Consumer, delivery: Delivery) -> str:
    """A non-atomic consumer: skip if consumed, run the handler, then write the inbox row."""
    try:
        if _already_consumed(spec, delivery.message_id):
            return ""
        spec.handler(delivery)
        try:
            with transaction.atomic(using=spec.alias):
                InboxEntry.objects.using(spec.alias).create(consumer=spec.name, message_id=delivery.message_id, topic=spec.topic)
        except IntegrityError:
            pass  # a concurrent delivery wrote the inbox row first
        return ""
    except Exception as exc:  # noqa: BLE001 - recorded on the message, resent on schedule
        logger.warning("consumer %s failed on message %s: %s", spec.name, delivery.message_id, _describe(exc))
        return _describe(exc)


def _consume_one(spec: registry.Consumer, delivery: Delivery) -> str:
    """Run one handler with its inbox row in a savepoint. Returns "" when consumed (or already
    consumed before), else the error, after rolling back everything this message wrote."""
    try:
        with transaction.atomic(using=spec.alias):
            InboxEntry.objects.using(spec.alias).create(consumer=spec.name, message_id=delivery.message_id, topic=spec.topic)
            spec.handler(delivery)
        return ""
    except IntegrityError as exc:
        if _already_consumed(spec, delivery.message_id):
            return ""
        return _describe(exc)
    except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, never lost
        logger.warning("consumer %s failed on message %s: %s", spec.name, delivery.message_id, _describe(exc))
        return _describe(exc)


def _already_consumed(spec: registry.Consumer, message_id: uuid.UUID) -> bool:
    try:
        return InboxEntry.objects.using(spec.alias).filter(consumer=spec.name, message_id=message_id).exists()
    except DatabaseError:
        return False


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"[:2000]


def acknowledge(origin: str, ids: list[int]) -> int:
    """Mark consumed, in one UPDATE. If the producer's database is unreachable the rows stay
    SENDING and are resent; the consumer's inbox turns the resend into a no-op."""
    if not ids:
        return 0
    try:
        return (
            Message.objects.using(origin)
            .filter(id__in=ids, status__in=[Status.SENDING, Status.DEAD])
            .update(status=Status.CONSUMED, consumed_at=timezone.now(), next_send_at=None, last_error="")
        )
    except DatabaseError:
        logger.warning("ack of %d message(s) to %s failed; they will be resent and deduplicated", len(ids), origin)
        return 0


def record_failures(origin: str, failures: dict[int, str]) -> None:
    for message_id, error in failures.items():
        try:
            Message.objects.using(origin).filter(id=message_id, status=Status.SENDING).update(last_error=error)
        except DatabaseError:
            logger.warning("could not record failure of message %s in %s", message_id, origin)


# --- recovery and check-back ---------------------------------------------------------------


def outbox_aliases() -> list[str]:
    return list(settings.DATABASES)


def recover_messages(*, now=None) -> dict[str, int]:
    """One pass of the recovery subsystem: resend due messages, then resolve stale PREPARED ones.

    Each alias is handled on its own: one unreachable database does not stop the others. Every
    alias is relayed before any producer is asked anything, so a slow check-back never delays
    a resend; check-backs stop when the pass's time budget is spent and go on next pass.
    """
    totals = {"resent": 0, "checked": 0}
    for alias in outbox_aliases():
        try:
            totals["resent"] += relay_due(alias, now=now)
        except DatabaseError:
            logger.warning("recovery skipped alias %s: database unavailable", alias, exc_info=True)
    deadline = time.monotonic() + settings.MESSAGE_CHECK_BACK_BUDGET
    for alias in outbox_aliases():
        try:
            totals["checked"] += check_back_due(alias, now=now, deadline=deadline)
        except DatabaseError:
            logger.warning("check-back skipped alias %s: database unavailable", alias, exc_info=True)
    return totals


def check_back_due(alias: str, *, now=None, limit: int = 100, deadline: float | None = None) -> int:
    """Ask the producer of each stale PREPARED message whether its transaction committed."""
    from paysys.messaging.check_back import ask_producer

    now = now or timezone.now()
    with transaction.atomic(using=alias):
        rows = list(
            Message.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(status=Status.PREPARED, next_send_at__lte=now)
            .order_by("next_send_at")[:limit]
        )
        # push the due time forward first: a slow producer must not be asked by two passes at once
        Message.objects.using(alias).filter(id__in=[r.id for r in rows]).update(
            check_count=F("check_count") + 1,
            next_send_at=now + timedelta(seconds=settings.MESSAGE_CHECK_BACK_INTERVAL),
        )
    seen = set()
    for row in rows:
        if deadline is not None and time.monotonic() > deadline:
            break  # out of time: the rest were pushed an interval forward and are asked then
        if row.message_id in seen:
            continue
        seen.add(row.message_id)
        verdict, error = ask_producer(row.check_back, row.business_key, row.message_id)
        if verdict is True:
            confirm(row.message_id, using=alias)
        elif verdict is False:
            discard(row.message_id, using=alias)
        elif row.check_count + 1 >= settings.MESSAGE_CHECK_BACK_MAX:
            Message.objects.using(alias).filter(message_id=row.message_id, status=Status.PREPARED).update(
                status=Status.DEAD, next_send_at=None, last_error=f"check-back undecided after {row.check_count + 1} asks: {error}"
            )
        else:
            Message.objects.using(alias).filter(message_id=row.message_id, status=Status.PREPARED).update(last_error=error)
    return len(seen)


# --- human actions (admin, commands) -------------------------------------------------------


def resend(alias: str, ids: Iterable[int]) -> int:
    """Make messages due now and clear their dead state; their send count starts over."""
    return _resend(alias, Message.objects.using(alias).filter(id__in=list(ids)))


def resend_dead_messages(alias: str, *, queue: str) -> int:
    return _resend(alias, Message.objects.using(alias).filter(status=Status.DEAD, queue=queue))


def _resend(alias: str, messages) -> int:
    # never-confirmed messages (dead after an undecided check-back) are not resent: sending
    # them would assume a producer commit nobody has seen; confirm or discard them instead
    updated = messages.filter(status__in=[Status.SENDING, Status.DEAD], confirmed_at__isnull=False).update(
        status=Status.SENDING, send_count=0, next_send_at=timezone.now()
    )
    if updated:
        kick_relay(alias)
    return updated
