"""TCC recovery: one pass, what beat runs every few seconds and ``manage.py recover_tcc`` runs once.

* TRYING past its deadline (the initiator died or hung between tries and decision) -> CANCELLING,
  and every branch's cancel is sent (an untried branch's is an empty cancel);
* CONFIRMING / CANCELLING due again (phase two not finished in time: a task lost with the broker,
  a worker or database down) -> its unfinished branches are sent again, on the backoff of
  TCC_RETRY_SCHEDULE; a transaction whose branches are all done is made final;
* due again after the last wait of the schedule -> flagged for a human (admin, "Retry phase two
  now"), never dropped and never retried unseen.

``purge_barriers`` (beat, hourly) deletes barrier rows of transactions that ended more than
TCC_BARRIER_RETENTION_DAYS ago (Seata cleans its fence log after a day): no op of a final
transaction can arrive any more, and a try never outlives its seconds-long timeout.

Rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED and pushed to their next due time in the
same transaction, so several passes at once never work on the same transaction; the resends
are sent after that commit. Everything sent twice is applied once (the barrier).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from paysys.tcc import phase_two
from paysys.tcc.models import Barrier, GlobalTransaction, TransactionBranch

logger = logging.getLogger(__name__)

Status = GlobalTransaction.Status
CLAIM_LIMIT = 500


def recover_tcc(*, now=None, limit: int = CLAIM_LIMIT) -> dict[str, int]:
    now = now or timezone.now()
    cancelled = cancel_expired(now=now, limit=limit)
    totals = resend_due(now=now, limit=limit)
    return {"cancelled": cancelled, **totals}


def _due(now, statuses, limit: int) -> list[GlobalTransaction]:
    return list(
        GlobalTransaction.objects.filter(
            status__in=statuses, next_retry_at__lte=now, needs_human=False
        )
        .order_by("next_retry_at")
        .select_for_update(skip_locked=True)[:limit]
    )


def cancel_expired(*, now=None, limit: int = CLAIM_LIMIT) -> int:
    """Cancel TRYING transactions past their deadline; returns how many."""
    now = now or timezone.now()
    with transaction.atomic(using="default"):
        rows = _due(now, [Status.TRYING], limit)
        GlobalTransaction.objects.filter(pk__in=[r.pk for r in rows]).transition(
            Status.CANCELLING,
            decided_at=now,
            last_error="tries not finished by the deadline",
            next_retry_at=now + timedelta(seconds=phase_two.retry_delay(0)),
        )
    for gtx in rows:
        gtx.status = Status.CANCELLING
    _resend([entry for gtx in rows for entry in phase_two.pending_items(gtx)])
    return len(rows)


def resend_due(*, now=None, limit: int = CLAIM_LIMIT) -> dict[str, int]:
    """Resend the unfinished phase two of due CONFIRMING / CANCELLING transactions."""
    now = now or timezone.now()
    limit_reached = len(settings.TCC_RETRY_SCHEDULE)
    with transaction.atomic(using="default"):
        rows = _due(now, GlobalTransaction.PHASE_TWO, limit)
        unfinished = set(
            TransactionBranch.objects.filter(
                gtx__in=[r.pk for r in rows], status__in=TransactionBranch.UNFINISHED
            ).values_list("gtx_id", flat=True)
        )
        complete = [r.pk for r in rows if r.pk not in unfinished]
        flagged = [r for r in rows if r.pk in unfinished and r.attempts >= limit_reached]
        resent = [r for r in rows if r.pk in unfinished and r.attempts < limit_reached]
        if flagged:
            GlobalTransaction.objects.filter(pk__in=[r.pk for r in flagged]).update(
                needs_human=True, next_retry_at=None
            )
        by_attempts: dict[int, list[int]] = defaultdict(list)
        for gtx in resent:
            by_attempts[gtx.attempts + 1].append(gtx.pk)
        for attempts, ids in by_attempts.items():
            GlobalTransaction.objects.filter(pk__in=ids).update(
                attempts=F("attempts") + 1,
                next_retry_at=now + timedelta(seconds=phase_two.retry_delay(attempts)),
            )
    for gtx in flagged:
        logger.error(
            "TCC %s %s: phase two unfinished after %d resends; flagged for a human",
            gtx.name,
            gtx.xid,
            gtx.attempts,
        )
    phase_two.mark_final(complete)
    _resend([entry for gtx in resent for entry in phase_two.pending_items(gtx)])
    return {"resent": len(resent), "flagged": len(flagged), "finished": len(complete)}


def _resend(items: list[dict]) -> None:
    if not items:
        return
    try:
        phase_two.resend(items)
    except Exception:  # broker down: the rows are due again at their next retry time
        logger.warning(
            "TCC recovery could not send %d branch op(s); next pass will", len(items), exc_info=True
        )


def retry_now(gtx_ids: list[int]) -> int:
    """A human's "retry phase two now": clear the flag, restart the backoff, send at once.
    Returns how many transactions were sent again."""
    now = timezone.now()
    with transaction.atomic(using="default"):
        rows = list(
            GlobalTransaction.objects.filter(
                pk__in=gtx_ids, status__in=GlobalTransaction.PHASE_TWO
            ).select_for_update()
        )
        GlobalTransaction.objects.filter(pk__in=[r.pk for r in rows]).update(
            needs_human=False,
            attempts=0,
            next_retry_at=now + timedelta(seconds=phase_two.retry_delay(0)),
        )
    phase_two.mark_final(r.pk for r in rows)
    items = [entry for gtx in rows for entry in phase_two.pending_items(gtx)]
    phase_two.resend(items)  # a human sees a broker error
    return len(rows)


def purge_barriers(*, now=None, limit: int = 2000) -> int:
    """Delete the barrier rows, in every alias, of final transactions older than the retention.
    Rows of transactions not final (flagged for a human) or unknown to the coordinator are kept.
    Returns rows deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.TCC_BARRIER_RETENTION_DAYS)
    deleted = 0
    for alias in settings.DATABASES:
        try:
            xids = list(
                Barrier.objects.using(alias)
                .filter(created_at__lt=cutoff)
                .order_by()
                .values_list("xid", flat=True)
                .distinct()[:limit]
            )
            final = list(
                GlobalTransaction.objects.filter(
                    xid__in=xids, status__in=[Status.CONFIRMED, Status.CANCELLED]
                ).values_list("xid", flat=True)
            )
            if final:
                deleted += Barrier.objects.using(alias).filter(xid__in=final).delete()[0]
        except DatabaseError:
            logger.warning(
                "TCC barrier purge skipped alias %s: database unavailable", alias, exc_info=True
            )
    return deleted
