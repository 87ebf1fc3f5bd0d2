"""The TCC coordinator: ``run()`` drives one global transaction through its tries and commits the
decision; phase two then runs in the participants' workers (``paysys.tcc.phase_two``).

    run(name, business_key=, branches=)
      1. begin: the key's open transaction is resumed; a confirmed key returns ``already``;
         otherwise a new transaction (new xid, attempt + 1) with its branches, in ``default``
      2. tries, one after another, each in a try thread with its own connection and bounded by
         TCC_TRY_TIMEOUT: a participant database that does not answer is a failed try
      3. decision committed in ``default``: CONFIRMING (all tried) or CANCELLING (one failed)
      4. phase two handed to the dispatcher (one task per participant queue per batch)

Why tries never share the caller's connection: a try must commit on its own (its barrier row and
reservation are what phase two finds), not with whatever transaction the caller has open. For
the same reason ``run`` refuses to start inside an open transaction on ``default`` or on any
participant's alias: the decision would not be committed before phase two, and a try could wait
forever on a lock that the caller's transaction holds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import queue as queue_module
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from paysys.core.errors import DomainError, Unavailable
from paysys.tcc import barrier, registry
from paysys.tcc.models import GlobalTransaction, TransactionBranch

logger = logging.getLogger(__name__)

Status = GlobalTransaction.Status
BranchStatus = TransactionBranch.Status


@dataclass(frozen=True)
class Branch:
    """One participant action of a global transaction, with its payload (JSON-serialisable)."""

    action: str
    payload: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    xid: str
    status: str  # CONFIRMING or CONFIRMED
    attempt: int
    already: bool = False  # the key was confirmed before; nothing new ran


class TryFailed(Exception):
    """A try failed and the CANCEL decision is committed (the cancels are on their way).

    ``cause`` is the participant's exception, a ``TimeoutError`` (no answer within
    TCC_TRY_TIMEOUT), a database error, or ``barrier.BarrierRefused``.
    """

    def __init__(self, action: str | None, xid: str, cause: BaseException):
        super().__init__(f"TCC try {action or '(transaction)'} of {xid} failed: {cause.__class__.__name__}: {cause}")
        self.action = action
        self.xid = xid
        self.cause = cause

    @property
    def is_transient(self) -> bool:
        """True when trying again later may succeed (a service down or slow, a lost race);
        False for a business refusal (a DomainError such as InsufficientFunds or Conflict)."""
        return not isinstance(self.cause, DomainError) or isinstance(self.cause, Unavailable)


def run(name: str, *, business_key: str, branches: list[Branch]) -> Outcome:
    """Run global transaction ``name`` for ``business_key`` over ``branches``; returns once the
    CONFIRM decision is committed, raises :class:`TryFailed` once the CANCEL decision is."""
    if not branches:
        raise ValueError("a TCC transaction needs at least one branch")
    specs = [registry.get_participant(b.action) for b in branches]
    _refuse_open_transactions({"default", *(spec.alias for spec in specs)})
    try:
        gtx, rows = begin(name, business_key=business_key, branches=branches)
        if gtx.status != Status.TRYING:
            return Outcome(gtx.xid, gtx.status, gtx.attempt, already=True)
        for row in rows:
            try:
                run_try(registry.get_participant(row.action), xid=gtx.xid, branch=row.branch_no, payload=row.payload)
            except Exception as exc:  # noqa: BLE001 - any failure of a try cancels the transaction
                if not decide_cancel(gtx, failed=row, error=exc):
                    gtx.refresh_from_db()
                    if gtx.status in (Status.CONFIRMING, Status.CONFIRMED):  # a concurrent run of this xid confirmed it
                        return Outcome(gtx.xid, gtx.status, gtx.attempt, already=True)
                raise TryFailed(row.action, gtx.xid, exc) from exc
        return decide_confirm(gtx, rows)
    except DatabaseError as exc:  # the coordinator's own database: nothing could be decided
        # (an open transaction left TRYING is cancelled by recovery after its deadline)
        raise Unavailable(f"TCC coordinator database unavailable: {exc}") from exc


def _refuse_open_transactions(aliases: set[str]) -> None:
    open_on = sorted(alias for alias in aliases if connections[alias].in_atomic_block)
    if open_on:
        raise RuntimeError(
            f"tcc.run() inside an open transaction on {', '.join(open_on)}: run it outside "
            "(e.g. a non-atomic consumer), so tries and the decision commit on their own"
        )


# --- 1. begin or resume --------------------------------------------------------------------


def begin(name: str, *, business_key: str, branches: list[Branch]) -> tuple[GlobalTransaction, list[TransactionBranch]]:
    """The key's transaction to work on: its open TRYING one (resumed, with its own branches), a
    confirmed one (returned as is: nothing to do), or a new one after the last cancelled."""
    try:  # the common case, a key seen for the first time: one insert, no look-up
        return _create(name, business_key, 1, branches)
    except IntegrityError:
        pass
    for _ in range(5):  # a concurrent run may create the same attempt first: look again
        latest = GlobalTransaction.objects.filter(business_key=business_key).order_by("-attempt").first()
        if latest is not None and latest.status == Status.TRYING:
            _extend_deadline(latest)  # resumed: its tries run again now
            return latest, list(latest.branches.order_by("branch_no"))
        if latest is not None and latest.status in (Status.CONFIRMING, Status.CONFIRMED):
            return latest, []
        try:
            return _create(name, business_key, (latest.attempt + 1) if latest else 1, branches)
        except IntegrityError:
            continue
    raise Unavailable(f"could not start a TCC transaction for {business_key!r}: too much contention")


def _deadline(branches: int):
    return timezone.now() + timedelta(seconds=settings.TCC_TRY_TIMEOUT * branches + settings.TCC_DECISION_GRACE)


def _extend_deadline(gtx: GlobalTransaction) -> None:
    gtx.deadline = _deadline(gtx.branches.count())
    GlobalTransaction.objects.filter(pk=gtx.pk, status=Status.TRYING).update(deadline=gtx.deadline, next_retry_at=gtx.deadline)


def _create(name: str, business_key: str, attempt: int, branches: list[Branch]):
    deadline = _deadline(len(branches))
    with transaction.atomic(using="default"):
        gtx = GlobalTransaction.objects.create(
            xid=uuid.uuid4().hex, name=name, business_key=business_key, attempt=attempt,
            deadline=deadline, next_retry_at=deadline,
        )
        rows = TransactionBranch.objects.bulk_create(
            [TransactionBranch(gtx=gtx, branch_no=i, action=b.action, payload=b.payload) for i, b in enumerate(branches, 1)]
        )
    return gtx, rows


# --- 2. tries, each bounded by TCC_TRY_TIMEOUT ---------------------------------------------


def run_try(spec: registry.Participant, *, xid: str, branch: int, payload: dict) -> str:
    """Run one try on a try thread of its alias and wait at most TCC_TRY_TIMEOUT for it (time
    queued for a free thread included)."""
    future = _try_threads.submit(spec.alias, _try_on_own_connection, spec, xid, branch, payload)
    try:
        return future.result(timeout=settings.TCC_TRY_TIMEOUT)
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued: it never runs
        raise TimeoutError(f"{spec.action} did not answer within {settings.TCC_TRY_TIMEOUT}s") from None


def _try_on_own_connection(spec: registry.Participant, xid: str, branch: int, payload: dict) -> str:
    connection = connections[spec.alias]
    connection.close_if_unusable_or_obsolete()
    try:
        return barrier.run_op(spec, xid=xid, branch=branch, op=barrier.TRY, payload=payload)
    except DatabaseError:
        connection.close()  # whatever state it is in, the next try starts on a fresh one
        raise


class _TryThreads:
    """Per database alias, up to TCC_TRY_THREADS threads that run tries, each keeping its one
    connection to that alias between tries (a process opens at most that many per alias).

    A try that times out keeps its thread until the database answers or the connection's read
    timeout fires; tries queued behind it time out too, which is right: that database does not
    answer. Other aliases' tries never wait for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, _AliasThreads] = {}
        self._pid: int | None = None

    def submit(self, alias: str, fn, *args) -> concurrent.futures.Future:
        with self._lock:
            if self._pid != os.getpid():  # first use in this process, or in a forked child
                self._pid, self._pools = os.getpid(), {}
            pool = self._pools.get(alias)
            if pool is None:
                pool = self._pools[alias] = _AliasThreads(alias)
        return pool.submit(fn, *args)


class _AliasThreads:
    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._jobs: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job
        self._queued = 0  # jobs no thread has taken yet

    def submit(self, fn, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._queued += 1
            grow = self._queued > self._idle and self._threads < settings.TCC_TRY_THREADS
            if grow:
                self._threads += 1
        self._jobs.put((future, fn, args))
        if grow:
            threading.Thread(target=self._serve, name=f"paysys-tcc-try-{self.alias}", daemon=True).start()
        return future

    def _serve(self) -> None:
        _bound_reads(self.alias)
        while True:
            with self._lock:
                self._idle += 1
            future, fn, args = self._jobs.get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(exc)


def _bound_reads(alias: str) -> None:
    """This thread's MySQL connection gives up on a silent server after about TCC_TRY_TIMEOUT
    (the client library retries a read up to 3 times), so a hung try frees its thread."""
    seconds = max(1, math.ceil(settings.TCC_TRY_TIMEOUT))
    connection = connections[alias]
    if connection.vendor == "mysql":
        options = {**connection.settings_dict.get("OPTIONS", {}), "read_timeout": seconds, "write_timeout": seconds}
        connection.settings_dict = {**connection.settings_dict, "OPTIONS": options}


_try_threads = _TryThreads()


# --- 3. the decision, committed before phase two -------------------------------------------


def decide_confirm(gtx: GlobalTransaction, rows: list[TransactionBranch]) -> Outcome:
    from paysys.tcc import phase_two

    now = timezone.now()
    try:
        decided = GlobalTransaction.objects.filter(pk=gtx.pk, status=Status.TRYING).update(
            status=Status.CONFIRMING, confirmed_key=gtx.business_key, decided_at=now,
            next_retry_at=now + timedelta(seconds=phase_two.retry_delay(0)),
        )
    except IntegrityError:  # another transaction of this key is confirmed: this one must not be
        logger.error("TCC %s: key %r already confirmed by another transaction; cancelling", gtx.xid, gtx.business_key)
        decide_cancel(gtx, failed=None, error=None)
        confirmed = GlobalTransaction.objects.get(confirmed_key=gtx.business_key)
        return Outcome(confirmed.xid, confirmed.status, confirmed.attempt, already=True)
    if not decided:  # recovery (deadline passed) or a concurrent run decided first
        gtx.refresh_from_db()
        if gtx.status in (Status.CONFIRMING, Status.CONFIRMED):
            return Outcome(gtx.xid, gtx.status, gtx.attempt, already=True)
        raise TryFailed(None, gtx.xid, Unavailable(f"transaction {gtx.xid} was cancelled while trying (deadline passed)"))
    phase_two.dispatch(gtx.xid, "confirm", rows)
    return Outcome(gtx.xid, Status.CONFIRMING, gtx.attempt)


def decide_cancel(gtx: GlobalTransaction, *, failed: TransactionBranch | None, error: BaseException | None) -> bool:
    """Commit CANCELLING (if still TRYING) and send every branch's cancel: an untried branch's
    cancel is an empty cancel, and it bars that try if it is still on its way."""
    from paysys.tcc import phase_two

    now = timezone.now()
    reason = f"{failed.action}: {error.__class__.__name__}: {error}"[:2000] if failed is not None else ""
    with transaction.atomic(using="default"):
        decided = GlobalTransaction.objects.filter(pk=gtx.pk, status=Status.TRYING).update(
            status=Status.CANCELLING, decided_at=now, last_error=reason,
            next_retry_at=now + timedelta(seconds=phase_two.retry_delay(0)),
        )
        if decided and failed is not None:
            TransactionBranch.objects.filter(pk=failed.pk).update(status=BranchStatus.TRY_FAILED, last_error=reason)
    if decided:
        phase_two.dispatch(gtx.xid, "cancel", list(gtx.branches.order_by("branch_no")))
    return bool(decided)
