"""Recovery: the periodic passes that resend due messages of every alias and resolve stale
PREPARED ones by asking their producer (check-back).

The two passes run apart: resends on the ``core`` queue (``messaging.recover_messages``), beside
the relay of bank payments, and check-backs on a queue of their own (``messaging.check_back``,
``MESSAGE_CHECK_BACK_QUEUE``), because a check-back waits on a server someone else runs and
must never hold up a payment. ``manage.py recover_messages`` runs one pass of each.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from paysys.core import http
from paysys.messaging import outbox, registry, relay
from paysys.messaging.models import Message

logger = logging.getLogger(__name__)

Status = Message.Status
VERDICTS = {"COMMITTED": True, "ROLLED_BACK": False, "UNKNOWN": None}


def outbox_aliases() -> list[str]:
    return list(settings.DATABASES)


def recover_messages(*, now=None) -> dict[str, int]:
    """One pass of the recovery subsystem (``manage.py recover_messages``): resend due messages,
    then resolve stale PREPARED ones. Beat runs the two as separate tasks on separate queues."""
    return {"resent": resend_due(now=now), "checked": check_back_stale(now=now)}


def resend_due(*, now=None) -> int:
    """Resend the due messages of every outbox. Each alias is handled on its own: one
    unreachable database does not stop the others."""
    resent = 0
    for alias in outbox_aliases():
        try:
            resent += relay.relay_due(alias, now=now)
        except DatabaseError:
            logger.warning("recovery skipped alias %s: database unavailable", alias, exc_info=True)
    return resent


def check_back_stale(*, now=None) -> int:
    """Ask the producers of the stale PREPARED messages of every outbox, within the pass's time
    budget (``MESSAGE_CHECK_BACK_BUDGET``); what is left is asked next pass."""
    checked = 0
    deadline = time.monotonic() + settings.MESSAGE_CHECK_BACK_BUDGET
    for alias in outbox_aliases():
        try:
            checked += check_back_due(alias, now=now, deadline=deadline)
        except DatabaseError:
            logger.warning(
                "check-back skipped alias %s: database unavailable", alias, exc_info=True
            )
    return checked


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
    messages: dict[uuid.UUID, Message] = {}
    for row in rows:  # a row per consumer: the producer is asked once per message
        messages.setdefault(row.message_id, row)
    answers = ask_producers(list(messages.values()), deadline=deadline)
    for row in messages.values():
        if row.message_id not in answers:
            continue  # out of time: it was pushed an interval forward and is asked then
        verdict, error = answers[row.message_id]
        if verdict is True:
            outbox.confirm(row.message_id, using=alias)
        elif verdict is False:
            outbox.discard(row.message_id, using=alias)
        elif row.check_count + 1 >= settings.MESSAGE_CHECK_BACK_MAX:
            Message.objects.using(alias).filter(
                message_id=row.message_id, status=Status.PREPARED
            ).transition(
                Status.DEAD,
                next_send_at=None,
                last_error=f"check-back undecided after {row.check_count + 1} asks: {error}",
            )
        else:
            Message.objects.using(alias).filter(
                message_id=row.message_id, status=Status.PREPARED
            ).update(last_error=error)
    return len(answers)


# --- asking a producer -----------------------------------------------------------------------

Answer = tuple[
    bool | None, str
]  # (True: committed | False: never committed | None: undecided, error text)


def ask_producers(rows: list[Message], *, deadline: float | None = None) -> dict[uuid.UUID, Answer]:
    """Did the transaction behind each PREPARED message commit? Answers by message id.

    A registered resolver (``check_back`` is its name) runs here, one after another until the
    deadline. Producers' URLs are asked all at once through the guarded client, each within
    ``MESSAGE_CHECK_BACK_TIMEOUT`` (and what is left of the deadline): a slow producer costs its
    own message that time, and never delays another's answer. A message not asked (out of
    time) has no answer."""
    answers: dict[uuid.UUID, Answer] = {}
    by_url: list[Message] = []
    for row in rows:
        if row.check_back.startswith(("http://", "https://")):
            by_url.append(row)
        elif deadline is not None and time.monotonic() > deadline:
            break
        else:
            answers[row.message_id] = _ask_resolver(row.check_back, row.business_key)
    timeout = settings.MESSAGE_CHECK_BACK_TIMEOUT
    if by_url and deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
    if by_url and timeout > 0:
        responses = http.post_all(
            [(row.check_back, {}, _check_back_body(row)) for row in by_url],
            total_timeout=timeout,
        )
        for row, response in zip(by_url, responses, strict=False):
            answers[row.message_id] = _verdict(row.check_back, response)
    return answers


def _ask_resolver(name: str, business_key: str) -> Answer:
    resolve = registry.get_check_back(name)
    if resolve is None:
        return None, f"no check-back {name!r} is registered"
    try:
        return resolve(business_key), ""
    except Exception as exc:  # noqa: BLE001 - undecided; asked again next pass
        return None, f"{exc.__class__.__name__}: {exc}"[:500]


def _check_back_body(row: Message) -> bytes:
    """What the producer is asked: POST {"message_id", "business_key"}."""
    return json.dumps(
        {"message_id": str(row.message_id), "business_key": row.business_key}
    ).encode()


def _verdict(url: str, response: http.Response) -> Answer:
    """The producer answers 2xx {"status": COMMITTED|ROLLED_BACK|UNKNOWN}; anything else is undecided."""
    code = response.status_code
    if code is None:
        return None, f"check-back {url} failed: {response.error}"[:500]
    if not 200 <= code < 300:
        redirect = (
            f": redirect{' to ' + response.location if response.location else ''} not followed"
            if 300 <= code < 400
            else ""
        )
        return None, f"check-back {url} answered HTTP {code}{redirect}"[:500]
    try:
        status = json.loads(response.excerpt).get("status")
    except (ValueError, AttributeError):
        return (
            None,
            f"check-back {url} answered no JSON object (first {http.EXCERPT_BYTES} bytes read)"[
                :500
            ],
        )
    if status not in VERDICTS:
        return None, f"check-back {url} answered {status!r}"[:500]
    return VERDICTS[status], ""
