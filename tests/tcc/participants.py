"""Test participants of the TCC framework, with a real business table in their own aliases.

Each op appends a row to ``tcc_test_ledger`` in the participant's alias, inside the framework's
transaction, so a test sees exactly which business ops committed (and how often). Imported by the
tests and, for real-worker fault tests, by the workers (``celery worker --include``).
"""

from __future__ import annotations

import logging
import time

from django.db import connections

from paysys import tcc
from paysys.core.errors import InsufficientFunds

log = logging.getLogger(__name__)
LEDGER = "tcc_test_ledger"
# action -> (alias, queue)
ACTIONS = {
    "test.orders": ("orders", "orders"),
    "test.funds": ("funds", "funds"),
    "test.points": ("points", "points"),
}

_DDL = {
    "mysql": f"CREATE TABLE IF NOT EXISTS {LEDGER} (id BIGINT AUTO_INCREMENT PRIMARY KEY, xid VARCHAR(32) NOT NULL, "
    "action VARCHAR(32) NOT NULL, op VARCHAR(8) NOT NULL, amount BIGINT NOT NULL)",
    "sqlite": f"CREATE TABLE IF NOT EXISTS {LEDGER} (id INTEGER PRIMARY KEY AUTOINCREMENT, xid VARCHAR(32) NOT NULL, "
    "action VARCHAR(32) NOT NULL, op VARCHAR(8) NOT NULL, amount BIGINT NOT NULL)",
}


def create_ledgers() -> None:
    for alias, _ in ACTIONS.values():
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(_DDL[connection.vendor])


def ledger(alias: str, xid: str) -> list[tuple[str, str, int]]:
    """(action, op, amount) rows a transaction left in ``alias``, in order."""
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT action, op, amount FROM {LEDGER} WHERE xid = %s ORDER BY id", [xid])
        return [tuple(row) for row in cursor.fetchall()]


def _op(action: str, op: str):
    alias = ACTIONS[action][0]

    def run(payload: dict, *, xid: str) -> None:
        if payload.get(f"{op}_sleep"):  # {"try_sleep": 3}: a slow op, to be killed or timed out
            # a WARNING, so a worker's log shows it at any level: a fault test waits for this line
            log.warning(
                "%s.%s of %s started, sleeping %ss", action, op, xid, payload[f"{op}_sleep"]
            )
            time.sleep(payload[f"{op}_sleep"])
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {LEDGER} (xid, action, op, amount) VALUES (%s, %s, %s, %s)",
                [xid, action, op, payload.get("amount", 0)],
            )
        if op == "try" and payload.get("refuse"):
            raise InsufficientFunds(
                "test participant refuses"
            )  # after its write: the barrier rolls it back

    run.__qualname__ = f"{action}.{op}"
    return run


def _batched(op: str):
    """``test.batched``: a batched op (``tcc.many``); each row's amount is the size of the call
    it ran in, so a test sees which ops ran together."""

    @tcc.many
    def run(ops: list[tcc.BranchOp]) -> None:
        with connections["funds"].cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {LEDGER} (xid, action, op, amount) VALUES (%s, %s, %s, %s)",
                [(entry.xid, "test.batched", op, len(ops)) for entry in ops],
            )
        if op == "try" and any(entry.payload.get("refuse") for entry in ops):
            raise InsufficientFunds("test participant refuses")

    run.__qualname__ = f"test.batched.{op}"
    return run


def register() -> None:
    for action, (alias, queue) in ACTIONS.items():
        tcc.participant(
            action,
            alias=alias,
            queue=queue,
            try_=_op(action, "try"),
            confirm=_op(action, "confirm"),
            cancel=_op(action, "cancel"),
        )
    tcc.participant(
        "test.batched",
        alias="funds",
        queue="funds",
        try_=_batched("try"),
        confirm=_batched("confirm"),
        cancel=_op("test.funds", "cancel"),
    )


register()
