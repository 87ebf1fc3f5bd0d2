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

from django.db import connections, transaction
from django.utils import timezone

from paysys.tcc.models import Barrier
from paysys.tcc.registry import BranchOp, Participant

TRY, CONFIRM, CANCEL = "try", "confirm", "cancel"
APPLIED, DUPLICATE, EMPTY = "applied", "duplicate", "empty"


class BarrierRefused(Exception):
    """A try arrived after its branch was cancelled (suspension): the xid is over."""


_INSERT_IGNORE = {
    "mysql": "INSERT IGNORE INTO {table} (xid, branch, op, reason, created_at) VALUES (%s, %s, %s, %s, %s)",
    "sqlite": "INSERT OR IGNORE INTO {table} (xid, branch, op, reason, created_at) VALUES (%s, %s, %s, %s, %s)",
    "postgresql": "INSERT INTO {table} (xid, branch, op, reason, created_at) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT DO NOTHING",
}


def _insert(alias: str, xid: str, branch: int, op: str, reason: str) -> bool:
    """Insert-ignore one barrier row; True when it was inserted (one round trip, no savepoint)."""
    connection = connections[alias]
    sql = _INSERT_IGNORE[connection.vendor].format(table=connection.ops.quote_name(Barrier._meta.db_table))
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [xid, branch, op, reason, now])
        return cursor.rowcount == 1


def run_op(spec: Participant, *, xid: str, branch: int, op: str, payload: dict, savepoint: bool = True) -> str:
    """Run ``op`` of one branch behind the barrier; returns APPLIED, DUPLICATE or EMPTY.

    ``savepoint=False`` when a caller batches several ops in one transaction of its own (phase
    two): a failure then fails the whole batch, which the caller redoes op by op.
    """
    alias = spec.alias
    with transaction.atomic(using=alias, savepoint=savepoint):
        origin_inserted = op == CANCEL and _insert(alias, xid, branch, TRY, CANCEL)
        current_inserted = _insert(alias, xid, branch, op, op)
        if origin_inserted:
            return EMPTY
        if not current_inserted:
            if op == TRY and _cancelled(alias, xid, branch):
                raise BarrierRefused(f"try of {xid}/{branch} arrived after its cancel")
            return DUPLICATE
        spec.apply(op, [BranchOp(xid, payload)])
        return APPLIED


def _cancelled(alias: str, xid: str, branch: int) -> bool:
    """A repeated try is refused once its branch is cancelled (it is not just a duplicate)."""
    return Barrier.objects.using(alias).filter(xid=xid, branch=branch, reason=CANCEL).exists()
