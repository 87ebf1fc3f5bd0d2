"""What a human does to messages (admin actions and their management commands)."""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from paysys.messaging import kicks
from paysys.messaging.models import Message
from paysys.messaging.selectors import dead_messages

Status = Message.Status


def resend(alias: str, ids: Iterable[int]) -> int:
    """Make messages due now and clear their dead state; their send count starts over."""
    return _resend(alias, Message.objects.using(alias).filter(id__in=list(ids)))


def resend_dead_messages(alias: str, *, queue: str) -> int:
    """Resend every DEAD message of ``queue`` in ``alias``'s outbox."""
    return _resend(alias, dead_messages(alias, queue=queue))


def _resend(alias: str, messages) -> int:
    # never-confirmed messages (dead after an undecided check-back) are not resent: sending
    # them would assume a producer commit nobody has seen; confirm or discard them instead.
    # A CONSUMED one is not resent either: Message.TRANSITIONS has no move out of it.
    updated = messages.filter(confirmed_at__isnull=False).transition(
        Status.SENDING, send_count=0, next_send_at=timezone.now()
    )
    if updated:
        kicks.kick_relay(alias)
    return updated
