"""The branch barrier (DTM's sub-transaction barrier, Seata's TCC fence): participant code never
handles duplicates, empty cancels or suspension itself.

Every op runs in ``atomic(using=<participant alias>)`` together with an insert-ignore of a row
unique on (xid, branch, op):

* cancel first inserts the *try* row (reason ``cancel``): if that insert succeeds the try never
  ran, so this is an **empty cancel** (business cancel skipped) and the row now stands in the
  way of a late try;
* then the op's own row: nothing inserted means a **duplicate** (skipped, success), or for a try
  of a branch that has a cancel row, **suspension**: the late try is refused;
* else the business op runs; its writes and the barrier row commit or roll back together.

The unique key serialises concurrent ops on one branch: a cancel racing an uncommitted try
waits for it (then cancels it) or wins (and the try is refused).
"""

from __future__ import annotations

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from paysys.core.sql import insert_new_rows
from paysys.tcc.models import Barrier
from paysys.tcc.registry import BranchOp, Participant

TRY, CONFIRM, CANCEL = "try", "confirm", "cancel"
APPLIED, DUPLICATE, EMPTY = "applied", "duplicate", "empty"


class BarrierRefused(Exception):
    """A try arrived after its branch was cancelled (suspension): the xid is over."""


def _insert(alias: str, rows: list[tuple[str, int, str, str]]) -> int:
    """Insert-ignore barrier rows (xid, branch, op, reason) in one statement; returns how many
    were inserted (one round trip, no savepoint)."""
    now = connections[alias].ops.adapt_datetimefield_value(timezone.now())
    return insert_new_rows(
        alias,
        Barrier,
        ["xid", "branch", "op", "reason", "created_at"],
        [(*row, now) for row in rows],
    )


class NotFresh(Exception):
    """A batch met a barrier row that already existed (a duplicate or a cancelled branch): it is
    redone op by op, where each op gets its own answer."""


def run_batch(spec: Participant, *, op: str, items: list[tuple[str, int, dict]]) -> None:
    """Run ``op`` for many branches (xid, branch, payload) of one participant in ONE transaction
    of its alias: one barrier insert for all of them, then the op once over all (a batched op,
    ``registry.many``, turns that into set-based SQL). All or nothing: raises :class:`NotFresh`
    when any branch already has its barrier row, or whatever the op raised; the caller then
    runs each op alone with :func:`run_op`.

    Only for try and confirm: a cancel must first bar its try (see the module docstring), so
    cancels (rare) always run op by op.
    """
    if op == CANCEL:
        raise ValueError("cancels run op by op (run_op): each first bars its try")
    with transaction.atomic(using=spec.alias):
        # in key order: two batches sharing branches (resumed transactions) take their barrier
        # rows' locks in one order
        if _insert(spec.alias, sorted((xid, branch, op, op) for xid, branch, _ in items)) != len(
            items
        ):
            raise NotFresh(f"{spec.action} {op}: a branch of the batch ran before")
        spec.apply(op, [BranchOp(xid, payload) for xid, _, payload in items])


def run_op(spec: Participant, *, xid: str, branch: int, op: str, payload: dict) -> str:
    """Run ``op`` of one branch behind the barrier; returns APPLIED, DUPLICATE or EMPTY."""
    alias = spec.alias
    with transaction.atomic(using=alias):
        origin_inserted = op == CANCEL and _insert(alias, [(xid, branch, TRY, CANCEL)]) == 1
        current_inserted = _insert(alias, [(xid, branch, op, op)]) == 1
        if origin_inserted:
            return EMPTY
        if not current_inserted:
            if op == TRY and _cancelled(alias, xid, branch):
                raise BarrierRefused(f"try of {xid}/{branch} arrived after its cancel")
            return DUPLICATE
        spec.apply(op, [BranchOp(xid, payload)])
        return APPLIED


def run_all(
    spec: Participant, *, op: str, items: list[tuple[str, int, dict]]
) -> list[str | Exception]:
    """Run ``op`` for every branch (xid, branch, payload): as one batch when it can, else op by op.
    Returns, per item, APPLIED / DUPLICATE / EMPTY or the exception that op raised."""
    return attempt_batch(spec, op=op, items=items) or run_each(spec, op=op, items=items)


def attempt_batch(
    spec: Participant, *, op: str, items: list[tuple[str, int, dict]]
) -> list[str | Exception] | None:
    """:func:`run_batch` where it applies. Per item APPLIED when the batch committed, or the error
    when the database stopped answering; None when the ops must run one by one (:func:`run_each`):
    a cancel, a single op, or a batch that failed on an op (nothing of it committed)."""
    if op == CANCEL or len(items) < 2:
        return None
    try:
        run_batch(spec, op=op, items=items)
        return [APPLIED] * len(items)
    except Exception as exc:  # noqa: BLE001 - nothing of the batch committed
        return None if database_answers(spec.alias, exc) else [exc] * len(items)


def run_each(
    spec: Participant, *, op: str, items: list[tuple[str, int, dict]]
) -> list[str | Exception]:
    """Each op in a transaction of its own. Once the database stops answering, the ops left are
    failed with that error untried (each would only wait for its own timeout)."""
    results: list[str | Exception] = []
    for xid, branch, payload in items:
        if (
            results
            and isinstance(results[-1], Exception)
            and not database_answers(spec.alias, results[-1])
        ):
            results.append(results[-1])
            continue
        try:
            results.append(run_op(spec, xid=xid, branch=branch, op=op, payload=payload))
        except Exception as exc:  # noqa: BLE001 - this op's answer
            results.append(exc)
    return results


def database_answers(alias: str, error: Exception) -> bool:
    """False when ``error`` came from a database that no longer answers (a lost or refused
    connection), rather than from the op, a constraint or a lock."""
    if not isinstance(error, DatabaseError) or isinstance(error, IntegrityError):
        return True
    connection = connections[alias]
    try:
        return connection.connection is not None and connection.is_usable()
    except Exception:  # noqa: BLE001 - asking failed: it does not answer
        return False


def _cancelled(alias: str, xid: str, branch: int) -> bool:
    """A repeated try is refused once its branch is cancelled (it is not just a duplicate)."""
    return Barrier.objects.using(alias).filter(xid=xid, branch=branch, reason=CANCEL).exists()
