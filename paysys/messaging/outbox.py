"""Writing the outbox: publish in the producer's transaction, or prepare / confirm / discard
(two-phase) for producers that cannot write it in their own transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from paysys.core.sql import insert_objects
from paysys.messaging import kicks, registry
from paysys.messaging.models import Message

Status = Message.Status


class Event(Protocol):
    """What is published: a message contract (``paysys.contracts``), its topic and its payload."""

    TOPIC: str

    def to_payload(self) -> dict: ...


class UnknownTopic(ValueError):
    pass


class DuplicateBusinessKey(ValueError):
    """A prepare replayed for the same (topic, business key) with a different payload."""


def _rows(topic: str, payload: dict, *, status: str, due, **extra) -> list[Message]:
    consumers = registry.consumers_of(topic)
    if not consumers:
        raise UnknownTopic(f"no consumer is registered for topic {topic!r}")
    message_id = uuid.uuid4()
    return [
        Message(
            message_id=message_id,
            topic=topic,
            consumer=c.name,
            queue=c.queue,
            payload=payload,
            status=status,
            next_send_at=due,
            **extra,
        )
        for c in consumers
    ]


def publish(event: Event, *, using: str, business_key: str = "") -> uuid.UUID:
    """Write ``event`` (its ``TOPIC``, its ``to_payload()``) to ``using``'s outbox inside the
    caller's transaction.

    Must be called inside ``transaction.atomic(using=using)``: the message exists if and only if
    the business change commits. Delivery is kicked after commit, never before. ``business_key``
    (a payment's out_trade_no) lets admin's trace find the message without reading payloads.
    """
    return publish_many([event], using=using, business_keys=[business_key])[0]


def publish_many(
    events: list[Event], *, using: str, business_keys: list[str] | None = None
) -> list[uuid.UUID]:
    """:func:`publish` of several messages, one per event (ids in that order).

    For producers that change many rows in one transaction (batched TCC ops): one INSERT for all
    the rows and one relay kick, instead of a round trip and a kick per message.
    """
    if not transaction.get_connection(using).in_atomic_block:
        raise RuntimeError("publish() must run inside the producer's transaction.atomic(using=...)")
    now = timezone.now()
    keys = business_keys or [""] * len(events)
    messages = [
        _rows(
            event.TOPIC,
            event.to_payload(),
            status=Status.SENDING,
            due=now,
            confirmed_at=now,
            business_key=key,
        )
        for event, key in zip(events, keys, strict=True)
    ]
    insert_objects(using, [row for rows in messages for row in rows])
    transaction.on_commit(lambda: kicks.request_relay(using), using=using, robust=True)
    return [rows[0].message_id for rows in messages]


# --- two-phase -------------------------------------------------------------------------------


def prepare(
    topic: str, payload: dict, *, using: str = "default", business_key: str, check_back: str
) -> uuid.UUID:
    """Store a PREPARED message; it is sent only when confirmed. ``check_back`` names a
    registered resolver or is the producer's URL, asked if no confirm/discard comes in time.

    Idempotent on (topic, business key): a producer retrying after a lost answer gets the same
    message back, so a committed transaction is never announced twice.
    """
    producer_key = f"{topic}:{business_key}"
    due = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY)
    rows = _rows(
        topic,
        payload,
        status=Status.PREPARED,
        due=due,
        business_key=business_key,
        check_back=check_back,
        producer_key=producer_key,
    )
    try:
        with transaction.atomic(using=using):
            Message.objects.using(using).bulk_create(rows)
        return rows[0].message_id
    except IntegrityError:
        existing = Message.objects.using(using).filter(producer_key=producer_key).first()
        if existing is None:
            raise
        if existing.payload != payload:
            raise DuplicateBusinessKey(
                f"business key {business_key!r} was prepared with another payload"
            ) from None
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
        confirmed = _unconfirmed(message_id, using).transition(
            Status.SENDING, send_count=0, next_send_at=now, confirmed_at=now
        )
        if confirmed:
            transaction.on_commit(lambda: kicks.request_relay(using), using=using, robust=True)
    return confirmed


def discard(message_id: uuid.UUID, *, using: str = "default") -> int:
    """Drop an unconfirmed message (its producer's transaction rolled back). Sent messages stay."""
    deleted, _ = _unconfirmed(message_id, using).delete()
    return deleted
