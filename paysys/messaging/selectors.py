"""Reads of the message service."""

from __future__ import annotations

import uuid

from paysys.messaging.models import InboxEntry, Message

Status = Message.Status


def message_rows(message_id: uuid.UUID, *, using: str) -> list[Message]:
    """The outbox rows of one message in ``using``'s outbox, one per consumer."""
    return list(Message.objects.using(using).filter(message_id=message_id).order_by("id"))


def overall_status(rows: list[Message]) -> str:
    """One state for the message: the least advanced of its rows, DEAD before SENDING."""
    statuses = {row.status for row in rows}
    for state in (Status.PREPARED, Status.DEAD, Status.SENDING):
        if state in statuses:
            return state
    return Status.CONSUMED


def dead_messages(alias: str, *, queue: str):
    """The DEAD rows of ``queue`` in ``alias``'s outbox: what "resend all dead of a queue" takes
    (less the never-confirmed ones, which a human confirms or discards instead)."""
    return Message.objects.using(alias).filter(status=Status.DEAD, queue=queue)


def messages_about(business_key: str, *, aliases: list[str]) -> list[Message]:
    """Every outbox row published about ``business_key`` (an out_trade_no) in the outboxes of
    ``aliases``, each row's ``_state.db`` its alias. Index on business_key."""
    rows: list[Message] = []
    for alias in aliases:
        rows.extend(Message.objects.using(alias).filter(business_key=business_key).order_by("id"))
    return rows


def inbox_entry_get(*, consumer: str, message_id: uuid.UUID, using: str) -> InboxEntry | None:
    """The consumer's record of having processed the message (its unique (consumer, message_id))."""
    return InboxEntry.objects.using(using).filter(consumer=consumer, message_id=message_id).first()


def not_consumed(topic: str, business_keys, *, using: str) -> dict[str, str]:
    """business key -> status of ``topic``'s rows still in ``using``'s outbox (SENDING, PREPARED
    or DEAD; DEAD first, as it waits for a human). Index on business_key."""
    rows = (
        Message.objects.using(using)
        .filter(
            topic=topic,
            business_key__in=list(business_keys),
            status__in=[Status.SENDING, Status.PREPARED, Status.DEAD],
        )
        .order_by("status")
        .values_list("business_key", "status")
    )  # "DEAD" sorts first
    found: dict[str, str] = {}
    for key, status in rows:
        found.setdefault(key, status)
    return found
