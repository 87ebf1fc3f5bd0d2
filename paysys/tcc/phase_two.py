"""Phase two: confirms and cancels, run by the participant's own worker on its own queue.

In the deciding process, once the decision is committed:

    dispatch()             a background thread of this process kicks a phase-two pass on each
                           participant queue concerned; kicks arriving while one is pending
                           coalesce (a cache key, as the message relay does)
    apply_on_try_thread()  the coordinator's confirms run at once, on its try threads

In the participant's worker:

    run_queue_pass()       task ``tcc.phase_two_pass``: claims the queue's unfinished branches of
                           decided transactions from the coordinator (SKIP LOCKED) and applies
                           them as one batch per alias. So the decisions of any number of
                           initiator processes become one task and one batch per participant queue.
    apply_and_report()     task ``tcc.phase_two``: explicit branch items, which recovery's and a
                           human's ``resend()`` send (a branch that failed once is only retried
                           this way, on the backoff, never by passes)

Both apply the ops with ``apply_ops`` (per participant and op one transaction, each op behind its
barrier; a lost batch is redone op by op), record each branch's outcome on the coordinator
(``claim_and_apply`` in the claim's transaction, ``report_outcomes`` after), then ``mark_final``
the transactions whose every branch is done.

Nothing here is the source of truth: a kick or batch lost anywhere (the dispatching process
killed, the broker flushed, the worker killed) is resent by recovery from the coordinator's
tables, and the barrier makes the resend apply once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import F
from django.utils import timezone

from paysys.core.kicks import Kick, send_task
from paysys.core.sql import own_connection, retry_deadlock_victim
from paysys.tcc import barrier, registry
from paysys.tcc.models import GlobalTransaction, TransactionBranch

logger = logging.getLogger(__name__)

Status = GlobalTransaction.Status
BranchStatus = TransactionBranch.Status
OP_DONE = {barrier.CONFIRM: BranchStatus.CONFIRMED, barrier.CANCEL: BranchStatus.CANCELLED}


def retry_delay(resends: int) -> int:
    """Seconds before recovery resends phase two, after ``resends`` resends so far."""
    schedule = settings.TCC_RETRY_SCHEDULE
    return schedule[min(resends, len(schedule) - 1)]


def item(gtx_id: int, xid: str, op: str, row: TransactionBranch) -> dict:
    """One branch op as a task argument (JSON)."""
    return {
        "id": row.pk,
        "gtx": gtx_id,
        "xid": xid,
        "branch": row.branch_no,
        "action": row.action,
        "op": op,
        "payload": row.payload,
    }


def items_by_queue(items: Iterable[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for entry in items:
        try:
            queue = registry.get_participant(entry["action"]).queue
        except registry.UnknownParticipant:
            logger.error(
                "TCC branch %s: participant %s is not registered here", entry["id"], entry["action"]
            )
            continue
        grouped[queue].append(entry)
    return grouped


def dispatch(label: str, rows: list[TransactionBranch]) -> None:
    """After the decision's commit: have phase two of these branches run soon, without waiting.
    ``label`` names the transaction(s) in the log."""
    queues = set()
    for row in rows:
        try:
            queues.add(registry.get_participant(row.action).queue)
        except registry.UnknownParticipant:
            logger.error(
                "TCC %s: participant %s is not registered here; recovery will resend",
                label,
                row.action,
            )
    if queues:
        PHASE_TWO_PASS.request(*sorted(queues))


# kicks phase-two passes from a background thread: the initiator returns as soon as its decision
# is committed, never waiting on the cache or the broker
PHASE_TWO_PASS = Kick(
    "tcc.phase_two_pass",
    key="tcc:kick:{target}",
    ttl_setting="TCC_KICK_TTL",
    route=lambda queue: {"queue": queue, "routing_key": queue},
    thread_name="paysys-tcc-dispatch",
)
flush_dispatch = PHASE_TWO_PASS.flush  # short-lived processes, before they exit


def resend(items: list[dict]) -> int:
    """Recovery's resends and a human's "retry now": these branch ops as ``tcc.phase_two`` tasks,
    sent now, one per participant queue and chunk. Returns items sent; a broker error propagates
    (recovery calls this and counts on the next pass)."""
    sent = 0
    size = settings.TCC_PHASE_TWO_BATCH
    for queue, entries in items_by_queue(items).items():
        for start in range(0, len(entries), size):
            chunk = entries[start : start + size]
            send_task("tcc.phase_two", args=[chunk], queue=queue, routing_key=queue, retry=False)
            sent += len(chunk)
    return sent


# --- in the participant's worker -------------------------------------------------------------


def run_queue_pass(queue: str, *, limit: int | None = None) -> int:
    """One phase-two pass of ``queue``'s participants: claim, apply, record, mark final. Returns the
    branches claimed (the caller kicks another pass when it got a full batch)."""
    limit = limit or settings.TCC_PHASE_TWO_BATCH
    actions = registry.actions_of_queue(queue)
    if not actions:
        return 0
    # candidates first, joined, without locks (a locking join would also lock the transactions'
    # rows, and another queue's pass would then skip its own branches of them)
    candidates = list(
        TransactionBranch.objects.filter(
            action__in=actions,
            status__in=TransactionBranch.UNFINISHED,
            attempts=0,
            gtx__status__in=GlobalTransaction.PHASE_TWO,
            gtx__needs_human=False,
        )
        .order_by("id")
        .values_list("id", "gtx_id", "gtx__xid", "gtx__status")[:limit]
    )
    if candidates:
        claim_and_apply(
            {branch_id: (gtx_id, xid, status) for branch_id, gtx_id, xid, status in candidates},
            apply_ops,
        )
    return len(candidates)


def claim_and_apply(decided: dict[int, tuple[int, str, str]], apply) -> set[int]:
    """Claim these branches (id -> (gtx id, xid, decided status)), run them with
    ``apply(items) -> (done, failed)``, record the outcomes, mark final the transactions whose
    every branch is done. A branch another pass holds is skipped (SKIP LOCKED): that pass runs it.
    Returns the ids done."""
    claim = connections["default"].features.has_select_for_update_skip_locked
    with transaction.atomic(using="default") if claim else _nothing():
        rows = TransactionBranch.objects.filter(
            id__in=list(decided), status__in=TransactionBranch.UNFINISHED
        )
        rows = list(rows.select_for_update(skip_locked=True).order_by("id") if claim else rows)
        items = []
        for row in rows:
            gtx_id, xid, status = decided[row.pk]
            items.append(
                item(
                    gtx_id,
                    xid,
                    barrier.CONFIRM if status == Status.CONFIRMING else barrier.CANCEL,
                    row,
                )
            )
        done, failed = apply(items)
        # claimed FOR UPDATE above: recorded by primary key alone (StatusQuerySet.transition_locked)
        _record_outcomes(
            done, failed, locked={row.pk: row.status for row in rows} if claim else None
        )
    _mark_final_quietly(done)
    return {entry["id"] for entry in done}


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def apply_and_report(items: list[dict]) -> dict[str, list[int]]:
    """Apply a batch of confirms / cancels and report them to the coordinator (task
    ``tcc.phase_two``)."""
    done, failed = apply_ops(items)
    report_outcomes(done, failed)
    return {"done": sorted(e["id"] for e in done), "failed": sorted(failed)}


def apply_on_try_thread(alias: str, items: list[dict]) -> list[dict]:
    """On a try thread of ``alias`` (the coordinator's phase two at once): the items done. A
    failed op is only left undone: its participant's worker runs it next."""
    with own_connection(alias) as failed_use:
        done, failed = apply_ops(items, quiet=True)
        if failed:
            failed_use()
    return done


def apply_ops(items: list[dict], *, quiet: bool = False) -> tuple[list[dict], dict[int, str]]:
    """Per participant and op, one batch (``barrier.run_all``: one transaction, op by op if it
    fails). Returns the items done and the failed ones' errors."""
    done: list[dict] = []
    failed: dict[int, str] = {}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for entry in items:
        groups[entry["action"], entry["op"]].append(entry)
    for (action, op), batch in groups.items():
        try:
            spec = registry.get_participant(action)
        except registry.UnknownParticipant as exc:
            failed.update((entry["id"], str(exc)) for entry in batch)
            continue
        if spec.has_nothing_to(op):  # declared empty: no transaction, no barrier row
            done.extend(batch)
            continue
        results = barrier.run_all(
            spec, op=op, items=[(e["xid"], e["branch"], e["payload"]) for e in batch]
        )
        for entry, result in zip(batch, results, strict=False):
            if isinstance(result, Exception):  # recorded on the branch; recovery resends
                failed[entry["id"]] = f"{op}: {result.__class__.__name__}: {result}"[:2000]
            else:
                done.append(entry)
    if failed and not quiet:
        logger.warning(
            "TCC phase two: %d of %d op(s) failed; recovery resends them", len(failed), len(items)
        )
    return done, failed


def report_outcomes(done: list[dict], failed: dict[int, str]) -> None:
    """Tell the coordinator. If ``default`` does not answer, recovery resends later and the
    barrier turns the resend into no-ops that report again."""
    try:
        _record_outcomes(done, failed)
    except DatabaseError:
        logger.warning(
            "TCC phase-two report of %d branch(es) lost; recovery will resend",
            len(done),
            exc_info=True,
        )
        return
    _mark_final_quietly(done)


def _record_outcomes(
    done: list[dict], failed: dict[int, str], *, locked: dict[int, str] | None = None
) -> None:
    """``locked``: the branches' statuses as this transaction read them under its locks."""
    for op, status in OP_DONE.items():
        ids = [e["id"] for e in done if e["op"] == op]
        if ids and locked is not None:
            TransactionBranch.objects.transition_locked({i: locked[i] for i in ids}, status)
        elif ids:
            TransactionBranch.objects.filter(id__in=ids).transition(status)
    for branch_id, error in failed.items():
        TransactionBranch.objects.filter(id=branch_id).update(
            attempts=F("attempts") + 1, last_error=error
        )


def _mark_final_quietly(done: list[dict]) -> None:
    """:func:`mark_final` the transactions of these branches; recovery does it if this fails."""
    try:
        # a confirm's transaction is CONFIRMING, a cancel's CANCELLING: one UPDATE per op done
        for op, entries in _by_op(done).items():
            mark_final({e["gtx"] for e in entries}, deciding=_DECIDING[op])
    except DatabaseError:
        logger.warning(
            "TCC: finishing %d transaction(s) failed; recovery will", len(done), exc_info=True
        )


def _by_op(entries: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for entry in entries:
        grouped[entry["op"]].append(entry)
    return grouped


_DECIDING = {barrier.CONFIRM: Status.CONFIRMING, barrier.CANCEL: Status.CANCELLING}


def mark_final(gtx_ids: Iterable[int], *, deciding: str | None = None) -> int:
    """CONFIRMING / CANCELLING transactions with no unfinished branch become final; with
    ``deciding``, only those in that state (the caller knows: one UPDATE instead of two).

    Each worker reports its own branches (committed) before looking at the others, so whichever
    of two concurrent reporters looks last sees both done.
    """
    ids = set(gtx_ids)
    if not ids:
        return 0
    unfinished = set(
        TransactionBranch.objects.filter(
            gtx_id__in=ids, status__in=TransactionBranch.UNFINISHED
        ).values_list("gtx_id", flat=True)
    )
    complete = ids - unfinished
    if not complete:
        return 0
    now = timezone.now()
    finished = 0
    for current, final in (
        (Status.CONFIRMING, Status.CONFIRMED),
        (Status.CANCELLING, Status.CANCELLED),
    ):
        if deciding not in (None, current):
            continue
        # one statement that may run twice (it sets values): a deadlock's victim runs again
        finished += retry_deadlock_victim(
            "default",
            lambda current=current, final=final: GlobalTransaction.objects.filter(
                id__in=complete, status=current
            ).transition(final, finished_at=now, next_retry_at=None),
        )
    return finished


def pending_items(gtx: GlobalTransaction) -> list[dict]:
    op = barrier.CONFIRM if gtx.status == Status.CONFIRMING else barrier.CANCEL
    rows = gtx.branches.filter(status__in=TransactionBranch.UNFINISHED).order_by("branch_no")
    return [item(gtx.pk, gtx.xid, op, row) for row in rows]
