"""Phase two: confirms and cancels, run by the participant's own worker on its own queue.

    dispatch()   after the decision is committed: branch items go to a background thread of this
                 process that sends them, per participant queue, as one ``tcc.phase_two`` task per
                 batch (the many decisions of a few milliseconds become one task per queue)
    execute()    in the participant's worker: a batch's ops of one alias in one transaction, each
                 behind its barrier (a lost batch is redone op by op); then one report to the
                 coordinator: branches done, failures recorded, transactions whose every branch is
                 done become CONFIRMED / CANCELLED

Nothing here is the source of truth: a batch lost anywhere (the dispatching process killed, the
broker flushed, the worker killed) is resent by recovery from the coordinator's tables, and the
barrier makes the resend apply once.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import defaultdict
from typing import Iterable

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

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
    return {"id": row.pk, "gtx": gtx_id, "xid": xid, "branch": row.branch_no, "action": row.action, "op": op, "payload": row.payload}


def items_by_queue(items: Iterable[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for entry in items:
        try:
            queue = registry.get_participant(entry["action"]).queue
        except registry.UnknownParticipant:
            logger.error("TCC branch %s: participant %s is not registered here", entry["id"], entry["action"])
            continue
        grouped[queue].append(entry)
    return grouped


def dispatch(xid: str, op: str, rows: list[TransactionBranch]) -> None:
    """After the decision's commit: have phase two of these branches sent soon, without waiting."""
    unfinished = [row for row in rows if row.status in TransactionBranch.UNFINISHED]
    if unfinished:
        _dispatcher.submit([item(unfinished[0].gtx_id, xid, op, row) for row in unfinished])


def send(items: list[dict]) -> int:
    """Send phase-two tasks now, one per participant queue and chunk. Returns items sent; a
    broker error propagates (recovery calls this and counts on the next pass)."""
    from paysys.tcc.tasks import phase_two_batch

    sent = 0
    size = settings.TCC_PHASE_TWO_BATCH
    for queue, entries in items_by_queue(items).items():
        for start in range(0, len(entries), size):
            chunk = entries[start:start + size]
            phase_two_batch.apply_async(args=[chunk], queue=queue, routing_key=queue, retry=False)
            sent += len(chunk)
    return sent


class _Dispatcher:
    """Sends phase-two items from a background thread of this process: the initiator returns as
    soon as its decision is committed, and the items of concurrent decisions share tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[dict] = []
        self._idle = threading.Event()
        self._idle.set()
        self._pid: int | None = None

    def submit(self, items: list[dict]) -> None:
        with self._lock:
            self._pending.extend(items)
            self._idle.clear()
            if self._pid != os.getpid():  # first use in this process, or in a forked child
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="paysys-tcc-dispatch", daemon=True).start()
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted was sent (short-lived processes, before they exit)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                items, self._pending = self._pending, []
            try:
                send(items)
            except Exception:  # broker down: the committed decisions wait for recovery
                logger.warning("TCC phase two of %d branch(es) not sent; recovery will resend", len(items), exc_info=True)
            with self._lock:
                if not self._pending:
                    self._idle.set()


_dispatcher = _Dispatcher()
atexit.register(_dispatcher.flush)


def flush_dispatch(timeout: float = 5.0) -> bool:
    return _dispatcher.flush(timeout)


# --- in the participant's worker -------------------------------------------------------------


def execute(items: list[dict]) -> dict[str, list[int]]:
    """Run a batch of confirms / cancels and report them to the coordinator."""
    done: list[dict] = []
    failed: dict[int, str] = {}
    by_alias: dict[str, list[tuple[registry.Participant, dict]]] = defaultdict(list)
    for entry in items:
        try:
            spec = registry.get_participant(entry["action"])
        except registry.UnknownParticipant as exc:
            failed[entry["id"]] = str(exc)
            continue
        by_alias[spec.alias].append((spec, entry))
    for alias, batch in by_alias.items():
        try:
            with transaction.atomic(using=alias):
                for spec, entry in batch:
                    _run(spec, entry, savepoint=False)
            done.extend(entry for _, entry in batch)
        except Exception:  # noqa: BLE001 - the batch did not commit: none of it happened
            logger.warning("TCC phase-two batch of %d op(s) on %s did not commit; redoing one by one", len(batch), alias)
            for spec, entry in batch:
                try:
                    _run(spec, entry, savepoint=True)
                    done.append(entry)
                except Exception as exc:  # noqa: BLE001 - recorded on the branch; recovery resends
                    failed[entry["id"]] = f"{entry['op']}: {exc.__class__.__name__}: {exc}"[:2000]
    report(done, failed)
    return {"done": sorted(e["id"] for e in done), "failed": sorted(failed)}


def _run(spec: registry.Participant, entry: dict, *, savepoint: bool) -> str:
    return barrier.run_op(spec, xid=entry["xid"], branch=entry["branch"], op=entry["op"], payload=entry["payload"], savepoint=savepoint)


def report(done: list[dict], failed: dict[int, str]) -> None:
    """Tell the coordinator. If ``default`` does not answer, recovery resends later and the
    barrier turns the resend into no-ops that report again."""
    try:
        for op, status in OP_DONE.items():
            ids = [e["id"] for e in done if e["op"] == op]
            if ids:
                TransactionBranch.objects.filter(id__in=ids, status__in=TransactionBranch.UNFINISHED).update(status=status)
        for branch_id, error in failed.items():
            TransactionBranch.objects.filter(id=branch_id).update(attempts=F("attempts") + 1, last_error=error)
        finish_transactions({e["gtx"] for e in done})
    except DatabaseError:
        logger.warning("TCC phase-two report of %d branch(es) lost; recovery will resend", len(done), exc_info=True)


def finish_transactions(gtx_ids: Iterable[int]) -> int:
    """CONFIRMING / CANCELLING transactions with no unfinished branch become final.

    Each worker reports its own branches (committed) before looking at the others, so whichever
    of two concurrent reporters looks last sees both done.
    """
    ids = set(gtx_ids)
    if not ids:
        return 0
    unfinished = set(
        TransactionBranch.objects.filter(gtx_id__in=ids, status__in=TransactionBranch.UNFINISHED).values_list("gtx_id", flat=True)
    )
    complete = ids - unfinished
    if not complete:
        return 0
    now = timezone.now()
    finished = 0
    for current, final in ((Status.CONFIRMING, Status.CONFIRMED), (Status.CANCELLING, Status.CANCELLED)):
        finished += GlobalTransaction.objects.filter(id__in=complete, status=current).update(
            status=final, finished_at=now, next_retry_at=None
        )
    return finished


def pending_items(gtx: GlobalTransaction) -> list[dict]:
    op = barrier.CONFIRM if gtx.status == Status.CONFIRMING else barrier.CANCEL
    rows = gtx.branches.filter(status__in=TransactionBranch.UNFINISHED).order_by("branch_no")
    return [item(gtx.pk, gtx.xid, op, row) for row in rows]


def finish(xids: Iterable[str] | None = None) -> int:
    """Run the unfinished phase two of these transactions (default: every one deciding) here and
    now, in this process: for tests, the demo and a shell. Returns branch ops run."""
    transactions = GlobalTransaction.objects.filter(status__in=GlobalTransaction.PHASE_TWO)
    if xids is not None:
        transactions = transactions.filter(xid__in=list(xids))
    transactions = list(transactions)
    items = [entry for gtx in transactions for entry in pending_items(gtx)]
    if items:
        execute(items)
    finish_transactions(gtx.pk for gtx in transactions)  # also those whose last report was lost
    return len(items)
