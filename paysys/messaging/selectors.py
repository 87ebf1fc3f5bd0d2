"""Reads of the message service."""

from __future__ import annotations

import uuid

from paysys.messaging.models import Message

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
