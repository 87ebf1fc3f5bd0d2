"""Recovery: the periodic pass (beat, ``manage.py recover_messages``) that resends due messages
of every alias and resolves stale PREPARED ones by asking their producer (check-back)."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

import requests
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from paysys.messaging import outbox, registry, relay
from paysys.messaging.models import Message

logger = logging.getLogger(__name__)

Status = Message.Status
VERDICTS = {"COMMITTED": True, "ROLLED_BACK": False, "UNKNOWN": None}


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
            totals["resent"] += relay.relay_due(alias, now=now)
        except DatabaseError:
            logger.warning("recovery skipped alias %s: database unavailable", alias, exc_info=True)
    deadline = time.monotonic() + settings.MESSAGE_CHECK_BACK_BUDGET
    for alias in outbox_aliases():
        try:
            totals["checked"] += check_back_due(alias, now=now, deadline=deadline)
        except DatabaseError:
            logger.warning("check-back skipped alias %s: database unavailable", alias, exc_info=True)
    return totals


def resend_window() -> int:
    """Seconds from a message's first send until recovery gives up on it (DEAD) if no consumer
    acknowledges it: how long the message service keeps delivering a message by itself."""
    schedule = relay.resend_schedule()
    return sum(schedule[1:]) + schedule[-1]


def check_back_due(alias: str, *, now=None, limit: int = 100, deadline: float | None = None) -> int:
    """Ask the producer of each stale PREPARED message whether its transaction committed."""
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
            outbox.confirm(row.message_id, using=alias)
        elif verdict is False:
            outbox.discard(row.message_id, using=alias)
        elif row.check_count + 1 >= settings.MESSAGE_CHECK_BACK_MAX:
            Message.objects.using(alias).filter(message_id=row.message_id, status=Status.PREPARED).transition(
                Status.DEAD, next_send_at=None, last_error=f"check-back undecided after {row.check_count + 1} asks: {error}"
            )
        else:
            Message.objects.using(alias).filter(message_id=row.message_id, status=Status.PREPARED).update(last_error=error)
    return len(seen)


# --- asking a producer -----------------------------------------------------------------------


def ask_producer(check_back: str, business_key: str, message_id: uuid.UUID) -> tuple[bool | None, str]:
    """Did the transaction behind a PREPARED message commit? ``check_back`` is a registered
    resolver's name or the producer's URL. Returns (True: committed | False: never committed |
    None: undecided, error text)."""
    if check_back.startswith(("http://", "https://")):
        return _ask_url(check_back, business_key, message_id)
    resolve = registry.get_check_back(check_back)
    if resolve is None:
        return None, f"no check-back {check_back!r} is registered"
    try:
        return resolve(business_key), ""
    except Exception as exc:  # noqa: BLE001 - undecided; asked again next pass
        return None, f"{exc.__class__.__name__}: {exc}"[:500]


def _ask_url(url: str, business_key: str, message_id: uuid.UUID) -> tuple[bool | None, str]:
    """POST {"message_id", "business_key"}; the producer answers {"status": COMMITTED|ROLLED_BACK|UNKNOWN}."""
    try:
        response = requests.post(url, json={"message_id": str(message_id), "business_key": business_key}, timeout=5)
        response.raise_for_status()
        status = response.json().get("status")
    except (requests.RequestException, ValueError, AttributeError) as exc:
        return None, f"check-back {url} failed: {exc}"[:500]
    if status not in VERDICTS:
        return None, f"check-back {url} answered {status!r}"
    return VERDICTS[status], ""
