"""The TCC coordinator: ``run()`` drives one global transaction through its tries and commits the
decision; ``run_many()`` does the same for many business keys at once, batched; phase two then
runs in the participants' workers (``paysys.tcc.phase_two``).

    run(name, business_key=, branches=)          = run_many(name, [(business_key, branches)])
    run_many(name, [(business_key, branches), ...])
      1. begin: new keys get their transactions in one insert; a key seen before is resumed (its
         open transaction), answered ``already`` (confirmed), or given a new attempt (cancelled)
      2. tries, branch position by branch position (a failed try stops its transaction's later
         ones): per position, one batch per participant (one transaction, one barrier insert,
         set-based SQL for batched ops; op by op if the batch fails), on a try thread of its
         alias with its own connection (``paysys.tcc.try_threads``), aliases in parallel,
         bounded by TCC_TRY_TIMEOUT: a participant database that does not answer is a failed
         try
      3. decisions committed in ``default``: CONFIRMING for all that tried (one UPDATE),
         CANCELLING for each that failed
      4. phase two: the confirms run here at once, one batch per participant on its try threads
         (TCC_PHASE_TWO_INLINE); what is not done here, and every cancel, is dispatched to the
         participants' workers (``phase_two.dispatch``: one pass per participant queue)

Why tries never share the caller's connection: a try must commit on its own (its barrier row and
reservation are what phase two finds), not with whatever transaction the caller has open. For
the same reason ``run`` refuses to start inside an open transaction on ``default`` or on any
participant's alias: the decision would not be committed before phase two, and a try could wait
forever on a lock that the caller's transaction holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone

from paysys.core.errors import DomainError, Unavailable
from paysys.core.sql import own_connection
from paysys.tcc import barrier, registry, try_threads
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
        super().__init__(
            f"TCC try {action or '(transaction)'} of {xid} failed: {cause.__class__.__name__}: {cause}"
        )
        self.action = action
        self.xid = xid
        self.cause = cause

    @property
    def is_transient(self) -> bool:
        """True when trying again later may succeed (a service down or slow, a lost race);
        False for a business refusal (a DomainError such as InsufficientFunds or Conflict)."""
        return not isinstance(self.cause, DomainError) or isinstance(self.cause, Unavailable)


Job = tuple[str, list[Branch]]  # (business key, branches)


def run(name: str, *, business_key: str, branches: list[Branch]) -> Outcome:
    """Run global transaction ``name`` for ``business_key`` over ``branches``; returns once the
    CONFIRM decision is committed, raises :class:`TryFailed` once the CANCEL decision is.

    Group commit: calls of one ``name`` from several threads of a process at the same moment
    (concurrent balance payments in a web process) run as one :func:`run_many` batch. A call
    that finds no batch running runs at once, alone, with no wait; one that finds a batch
    running waits for it to end, and the waiting calls then run together, on one of their
    threads. Each gets its own answer, exactly as alone (a batch's tries are per transaction,
    a failure is its own transaction's); a batch costs about what one transaction costs, so under
    load a process completes several for the price of one and waits less behind the shared rows
    (the merchant's fund account) than one at a time would."""
    specs = {b.action: registry.get_participant(b.action) for b in branches}
    _refuse_open_transactions(
        {"default", *(spec.alias for spec in specs.values())}
    )  # the caller's own
    result = _GROUPS.run(name, (business_key, branches))
    if isinstance(result, BaseException):
        raise result
    return result


class _Group:
    """Leader and followers: the thread that finds the group idle leads a batch of every call
    queued by then; calls arriving meanwhile queue and wait; when the batch ends, one of them
    leads the next, with all that queued. No timer: a lone call never waits."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.busy: set[str] = set()  # names with a batch running
        self.queued: dict[str, list[_Call]] = defaultdict(list)

    def run(self, name: str, job: Job):
        call = _Call(job)
        with self.cond:
            self.queued[name].append(call)
            while not call.done and name in self.busy:
                self.cond.wait()
            if call.done:
                return call.answer
            self.busy.add(name)
            batch, self.queued[name] = self.queued[name], []
        try:
            answers = run_many(name, [c.job for c in batch])
        except BaseException as exc:  # noqa: BLE001 - every call of the batch gets the batch's error
            answers = [exc] * len(batch)
        with self.cond:
            for c, answer in zip(batch, answers, strict=False):
                c.answer = answer
            self.busy.discard(name)
            self.cond.notify_all()
        return call.answer


@dataclass
class _Call:
    job: Job
    answer: object = None  # its Outcome, TryFailed or the batch's error, once its batch ran

    @property
    def done(self) -> bool:
        return self.answer is not None


_GROUPS = _Group()


def run_many(name: str, jobs: list[Job]) -> list[Outcome | TryFailed]:
    """:func:`run` for many business keys at once, batched: one insert of their transactions,
    per branch position one batch of tries per participant (set-based when it registered
    batched ops), one confirm decision for all that tried. Returns, per job, its Outcome or its
    TryFailed; raises Unavailable when the coordinator's database does not answer (nothing was
    decided; recovery cancels what was begun). A key given twice is one transaction, run with the
    branches of its first job, and gets the same answer twice."""
    if not jobs or any(not branches for _, branches in jobs):
        raise ValueError("a TCC transaction needs at least one branch")
    specs = {b.action: registry.get_participant(b.action) for _, branches in jobs for b in branches}
    _refuse_open_transactions({"default", *(spec.alias for spec in specs.values())})
    unique = list(dict.fromkeys(key for key, _ in jobs))
    first = {key: branches for key, branches in reversed(jobs)}
    try:
        started = begin_many(name, [(key, first[key]) for key in unique])
        answers: dict[str, Outcome | TryFailed] = {}
        trying = []
        for key, (gtx, rows) in zip(unique, started, strict=False):
            if gtx.status != Status.TRYING:
                answers[key] = Outcome(gtx.xid, gtx.status, gtx.attempt, already=True)
            else:
                trying.append((key, gtx, rows))
        failures = _run_tries([(gtx, rows) for _, gtx, rows in trying])
        tried = [(key, gtx, rows) for key, gtx, rows in trying if gtx.pk not in failures]
        answers.update(
            zip(
                [key for key, _, _ in tried],
                decide_confirm_many([(gtx, rows) for _, gtx, rows in tried]),
                strict=False,
            )
        )
        for key, gtx, _rows in trying:
            if gtx.pk in failures:
                answers[key] = _cancelled(gtx, *failures[gtx.pk])
    except DatabaseError as exc:  # the coordinator's own database: nothing could be decided
        # (an open transaction left TRYING is cancelled by recovery after its deadline)
        raise Unavailable(f"TCC coordinator database unavailable: {exc}") from exc
    return [answers[key] for key, _ in jobs]


def _cancelled(
    gtx: GlobalTransaction, row: TransactionBranch, error: Exception
) -> Outcome | TryFailed:
    # a participant that refused (insufficient funds, too large a refund) answered, and so did
    # every database: its cancels run here before the caller is told, so what the tries held
    # (the order, the frozen amount) is free when the refusal arrives and the caller may try
    # again at once. A try that did not answer leaves them to the workers: no wait on it here
    refused = isinstance(error, DomainError) and not isinstance(error, Unavailable)
    if not decide_cancel(gtx, failed=row, error=error, at_once=refused):
        gtx.refresh_from_db()
        if gtx.status in (
            Status.CONFIRMING,
            Status.CONFIRMED,
        ):  # a concurrent run of this xid confirmed it
            return Outcome(gtx.xid, gtx.status, gtx.attempt, already=True)
    failed = TryFailed(row.action, gtx.xid, error)
    failed.__cause__ = error
    return failed


def confirmed_key(xid: str) -> str | None:
    """The business key transaction ``xid`` is confirmed for (its CONFIRM decision is committed:
    phase two will follow), or None (trying, cancelled, unknown)."""
    return GlobalTransaction.objects.filter(xid=xid).values_list("confirmed_key", flat=True).first()


def _refuse_open_transactions(aliases: set[str]) -> None:
    open_on = sorted(alias for alias in aliases if connections[alias].in_atomic_block)
    if open_on:
        raise RuntimeError(
            f"tcc.run() inside an open transaction on {', '.join(open_on)}: run it outside "
            "(e.g. a non-atomic consumer), so tries and the decision commit on their own"
        )


# --- 1. begin or resume --------------------------------------------------------------------


def begin(
    name: str, *, business_key: str, branches: list[Branch]
) -> tuple[GlobalTransaction, list[TransactionBranch]]:
    """The key's transaction to work on: its open TRYING one (resumed, with its own branches), a
    confirmed one (returned as is: nothing to do), or a new one after the last cancelled."""
    try:  # the common case, a key seen for the first time: one insert, no look-up
        return _create(name, business_key, 1, branches)
    except IntegrityError:
        pass
    for _ in range(5):  # a concurrent run may create the same attempt first: look again
        latest = (
            GlobalTransaction.objects.filter(business_key=business_key).order_by("-attempt").first()
        )
        if latest is not None and latest.status == Status.TRYING:
            _extend_deadline(latest)  # resumed: its tries run again now
            return latest, list(latest.branches.order_by("branch_no"))
        if latest is not None and latest.status in (Status.CONFIRMING, Status.CONFIRMED):
            return latest, []
        try:
            return _create(name, business_key, (latest.attempt + 1) if latest else 1, branches)
        except IntegrityError:
            continue
    raise Unavailable(
        f"could not start a TCC transaction for {business_key!r}: too much contention"
    )


def begin_many(
    name: str, jobs: list[Job]
) -> list[tuple[GlobalTransaction, list[TransactionBranch]]]:
    """:func:`begin` for many distinct keys: keys seen for the first time (the common case) in
    one transaction of two inserts; if any key was seen before, each key on its own."""
    try:
        return _create_many(name, [(key, 1, branches) for key, branches in jobs])
    except IntegrityError:
        return [begin(name, business_key=key, branches=branches) for key, branches in jobs]


def _deadline(branches: int):
    return timezone.now() + timedelta(
        seconds=settings.TCC_TRY_TIMEOUT * branches + settings.TCC_DECISION_GRACE
    )


def _extend_deadline(gtx: GlobalTransaction) -> None:
    gtx.deadline = _deadline(gtx.branches.count())
    GlobalTransaction.objects.filter(pk=gtx.pk, status=Status.TRYING).update(
        deadline=gtx.deadline, next_retry_at=gtx.deadline
    )


def _create(name: str, business_key: str, attempt: int, branches: list[Branch]):
    return _create_many(name, [(business_key, attempt, branches)])[0]


def _create_many(name: str, jobs: list[tuple[str, int, list[Branch]]]):
    """New transactions (key, attempt, branches) with their branches: two inserts, one commit."""
    with transaction.atomic(using="default"):
        made = GlobalTransaction.objects.bulk_create(
            [
                GlobalTransaction(
                    xid=uuid.uuid4().hex,
                    name=name,
                    business_key=key,
                    attempt=attempt,
                    deadline=deadline,
                    next_retry_at=deadline,
                )
                for key, attempt, branches in jobs
                for deadline in [_deadline(len(branches))]
            ]
        )
        if any(
            gtx.pk is None for gtx in made
        ):  # MySQL returns no ids from a bulk insert (MariaDB, SQLite do)
            ids = dict(
                GlobalTransaction.objects.filter(xid__in=[gtx.xid for gtx in made]).values_list(
                    "xid", "pk"
                )
            )
            for gtx in made:
                gtx.pk = ids[gtx.xid]
        rows = TransactionBranch.objects.bulk_create(
            [
                TransactionBranch(gtx=gtx, branch_no=i, action=b.action, payload=b.payload)
                for gtx, (_, _, branches) in zip(made, jobs, strict=False)
                for i, b in enumerate(branches, 1)
            ]
        )
    by_gtx: dict[int, list[TransactionBranch]] = {gtx.pk: [] for gtx in made}
    for row in rows:
        by_gtx[row.gtx_id].append(row)
    return [(gtx, by_gtx[gtx.pk]) for gtx in made]


# --- 2. tries, each bounded by TCC_TRY_TIMEOUT ---------------------------------------------


def _run_tries(
    started: list[tuple[GlobalTransaction, list[TransactionBranch]]],
) -> dict[int, tuple[TransactionBranch, Exception]]:
    """Every transaction's tries, branch position by branch position (a failed try stops that
    transaction's later ones). Per position, one batch per participant on a try thread of its
    alias (aliases in parallel), bounded by TCC_TRY_TIMEOUT; a batch that failed on an op (not
    on a silent database) is redone op by op, with a TCC_TRY_TIMEOUT of its own, so one refused
    or slow op does not fail its batch-mates. Returns the failed transactions: gtx id ->
    (branch, error)."""
    failures: dict[int, tuple[TransactionBranch, Exception]] = {}
    for position in range(max((len(rows) for _, rows in started), default=0)):
        by_alias: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for gtx, rows in started:
            if gtx.pk not in failures and position < len(rows):
                row = rows[position]
                by_alias[registry.get_participant(row.action).alias][row.action].append((gtx, row))
        redo = _on_try_threads(by_alias, _try_batches, failures)
        if redo:
            _on_try_threads(redo, _try_each, failures)
    return failures


def _on_try_threads(
    by_alias: dict[str, dict[str, list]], job, failures: dict
) -> dict[str, dict[str, list]]:
    """Run ``job(alias, groups)`` on a try thread of each alias and wait at most TCC_TRY_TIMEOUT
    for all of them (time queued for a free thread included); records failures (each try of an
    alias that did not answer in time: a TimeoutError), returns the groups the jobs want redone
    op by op."""
    answers = try_threads.run_per_alias(job, by_alias, timeout=settings.TCC_TRY_TIMEOUT)
    redo = {}
    for alias, groups in by_alias.items():
        if alias in answers:
            results, again = answers[alias]
        else:
            results, again = (
                [
                    (
                        gtx,
                        row,
                        TimeoutError(
                            f"{row.action} did not answer within {settings.TCC_TRY_TIMEOUT}s"
                        ),
                    )
                    for group in groups.values()
                    for gtx, row in group
                ],
                {},
            )
        for gtx, row, result in results:
            if isinstance(result, Exception):
                failures[gtx.pk] = (row, result)
        if again:
            redo[alias] = again
    return redo


def _try_batches(alias: str, groups: dict[str, list]):
    """Per participant, its tries as one batch (a single try: alone). Returns the results and
    the groups whose batch failed on an op, to be redone op by op by :func:`_try_each`."""
    return _tries(alias, groups, batched=True)


def _try_each(alias: str, groups: dict[str, list]):
    return _tries(alias, groups, batched=False)


def _tries(alias: str, groups: dict[str, list], *, batched: bool):
    results, redo = [], {}
    with own_connection(alias) as failed_use:
        for action, pairs in groups.items():
            spec = registry.get_participant(action)
            items = [(gtx.xid, row.branch_no, row.payload) for gtx, row in pairs]
            answers = barrier.attempt_batch(spec, op=barrier.TRY, items=items) if batched else None
            if answers is None and batched and len(items) > 1:
                redo[action] = pairs
                continue
            answers = answers or barrier.run_each(spec, op=barrier.TRY, items=items)
            results.extend(
                (gtx, row, answer) for (gtx, row), answer in zip(pairs, answers, strict=False)
            )
        if any(isinstance(answer, DatabaseError) for _, _, answer in results):
            failed_use()
    return results, redo


# --- 3. the decision, committed before phase two -------------------------------------------


def decide_confirm_many(
    started: list[tuple[GlobalTransaction, list[TransactionBranch]]],
) -> list[Outcome | TryFailed]:
    """Commit CONFIRMING for transactions whose every try succeeded, in one UPDATE, then hand
    their phase two to ``_run_phase_two``. A transaction decided meanwhile (recovery cancelled it
    past its deadline, or a concurrent run of its xid decided) gets the decision that stands."""

    if not started:
        return []
    ids = [gtx.pk for gtx, _ in started]
    try:
        decided = _mark_confirming(ids)
    except (
        IntegrityError
    ):  # another transaction of one of these keys is confirmed: decide each alone
        return [_decide_confirm_alone(gtx, rows) for gtx, rows in started]
    statuses = {gtx.pk: Status.CONFIRMING for gtx, _ in started}
    if decided != len(ids):
        statuses = dict(GlobalTransaction.objects.filter(pk__in=ids).values_list("pk", "status"))
    _run_phase_two(
        f"{started[0][0].xid} and {len(started) - 1} more",
        [
            (gtx, row)
            for gtx, rows in started
            if statuses[gtx.pk] == Status.CONFIRMING
            for row in rows
        ],
        Status.CONFIRMING,
    )
    return [_outcome_of(gtx, statuses[gtx.pk]) for gtx, _ in started]


def _run_phase_two(
    label: str, branches: list[tuple[GlobalTransaction, TransactionBranch]], decided: str
) -> None:
    """Phase two of transactions decided ``decided`` (CONFIRMING or CANCELLING). With
    TCC_PHASE_TWO_INLINE, here and now: each participant's ops as one batch on a try thread of
    its alias (aliases in parallel, bounded by TCC_TRY_TIMEOUT), recorded, the transactions
    finished; a branch not done here (its database slow or down, an op failing, a pass holding
    it) goes to its participant's worker as before. Either way the barrier applies each op once."""
    from paysys.tcc import phase_two

    done: set[int] = set()
    if settings.TCC_PHASE_TWO_INLINE and branches:
        try:
            done = phase_two.claim_and_apply(
                {row.pk: (gtx.pk, gtx.xid, decided) for gtx, row in branches},
                _apply_on_try_threads,
            )
        except DatabaseError:  # the coordinator's database: the workers and recovery finish it
            logger.warning(
                "TCC %s: phase two here failed; the participants' workers run it",
                label,
                exc_info=True,
            )
    phase_two.dispatch(label, [row for _, row in branches if row.pk not in done])


def _apply_on_try_threads(items: list[dict]) -> tuple[list[dict], dict[int, str]]:
    """``phase_two.apply_on_try_thread`` per alias; an alias that does not answer within
    TCC_TRY_TIMEOUT has its items left undone (not failed: no attempt is counted)."""
    from paysys.tcc import phase_two

    by_alias: dict[str, list[dict]] = defaultdict(list)
    done = []
    for entry in items:
        spec = registry.get_participant(entry["action"])
        if spec.has_nothing_to(entry["op"]):  # declared empty: done, no try thread needed
            done.append(entry)
        else:
            by_alias[spec.alias].append(entry)
    # a job that did not answer in time and is still running: the barrier makes a redo a no-op
    answers = try_threads.run_per_alias(
        phase_two.apply_on_try_thread, by_alias, timeout=settings.TCC_TRY_TIMEOUT
    )
    return done + [entry for alias_done in answers.values() for entry in alias_done], {}


def _mark_confirming(ids: list[int]) -> int:
    """The CONFIRM decision of these TRYING transactions, in one UPDATE; returns how many it
    moved. IntegrityError when one's key is already confirmed by another transaction."""
    from paysys.tcc import phase_two

    now = timezone.now()
    return GlobalTransaction.objects.filter(pk__in=ids).transition(
        Status.CONFIRMING,
        confirmed_key=F("business_key"),
        decided_at=now,
        next_retry_at=now + timedelta(seconds=phase_two.retry_delay(0)),
    )


def _outcome_of(gtx: GlobalTransaction, status: str) -> Outcome | TryFailed:
    if status in (Status.CONFIRMING, Status.CONFIRMED):
        return Outcome(gtx.xid, status, gtx.attempt)
    return TryFailed(
        None,
        gtx.xid,
        Unavailable(f"transaction {gtx.xid} was cancelled while trying (deadline passed)"),
    )


def _decide_confirm_alone(
    gtx: GlobalTransaction, rows: list[TransactionBranch]
) -> Outcome | TryFailed:

    try:
        decided = _mark_confirming([gtx.pk])
    except IntegrityError:  # another transaction of this key is confirmed: this one must not be
        logger.error(
            "TCC %s: key %r already confirmed by another transaction; cancelling",
            gtx.xid,
            gtx.business_key,
        )
        decide_cancel(gtx, failed=None, error=None)
        confirmed = GlobalTransaction.objects.get(confirmed_key=gtx.business_key)
        return Outcome(confirmed.xid, confirmed.status, confirmed.attempt, already=True)
    if not decided:  # recovery (deadline passed) or a concurrent run decided first
        gtx.refresh_from_db()
        outcome = _outcome_of(gtx, gtx.status)
        return (
            dataclasses.replace(outcome, already=True) if isinstance(outcome, Outcome) else outcome
        )
    _run_phase_two(gtx.xid, [(gtx, row) for row in rows], Status.CONFIRMING)
    return Outcome(gtx.xid, Status.CONFIRMING, gtx.attempt)


def decide_cancel(
    gtx: GlobalTransaction,
    *,
    failed: TransactionBranch | None,
    error: BaseException | None,
    at_once: bool = False,
) -> bool:
    """Commit CANCELLING (if still TRYING) and send every branch's cancel: an untried branch's
    cancel is an empty cancel, and it bars that try if it is still on its way. ``at_once``: the
    cancels run here first (TCC_PHASE_TWO_INLINE), as confirms do."""
    from paysys.tcc import phase_two

    now = timezone.now()
    reason = (
        f"{failed.action}: {error.__class__.__name__}: {error}"[:2000] if failed is not None else ""
    )
    with transaction.atomic(using="default"):
        decided = GlobalTransaction.objects.filter(pk=gtx.pk).transition(
            Status.CANCELLING,
            decided_at=now,
            last_error=reason,
            next_retry_at=now + timedelta(seconds=phase_two.retry_delay(0)),
        )
        if decided and failed is not None:
            TransactionBranch.objects.filter(pk=failed.pk).transition(
                BranchStatus.TRY_FAILED, last_error=reason
            )
    if decided:
        rows = list(gtx.branches.order_by("branch_no"))
        if at_once:
            _run_phase_two(gtx.xid, [(gtx, row) for row in rows], Status.CANCELLING)
        else:
            phase_two.dispatch(gtx.xid, rows)
    return bool(decided)
