"""The one status mechanism (paysys.core.statuses): every model with a status changes it only
through ``transition``, a guarded UPDATE, and nothing in the code goes around it."""

import ast
import re
from pathlib import Path

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from paysys.core.statuses import IllegalTransition, check_transition, sources_of
from paysys.tcc.models import GlobalTransaction
from tests.concurrency import run_at_once

ROOT = Path(__file__).resolve().parents[2]
# the outside parties (bank and merchant simulators) keep their own state, as a real bank does;
# the benchmark's stand-in monolith is the plain-SQL baseline the platform is measured against
NOT_THE_PLATFORM = ("paysys/sandbox/", "paysys/bench/monolith.py")
STATUS_NAMES = {"status", "state"}
Status = GlobalTransaction.Status


def _gtx(key: str) -> GlobalTransaction:
    return GlobalTransaction.objects.create(
        xid=key, name="t", business_key=key, deadline=timezone.now()
    )


def _platform_sources():
    for app in ("paysys", "orders", "accounts", "accounting", "notifications"):
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" not in relative and not relative.startswith(NOT_THE_PLATFORM):
                yield relative, path.read_text()


def _status_changes_outside_the_mechanism(source: str) -> list[int]:
    """Lines that change a status around ``transition``: ``update(status=...)`` (a queryset's, or a
    dict of changes headed for one), a status set on an object in a function that saves, or SQL
    that sets one."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "bulk_update")
        ):
            named = {k.arg for k in node.keywords} | {
                a.value
                for arg in node.args
                if isinstance(arg, (ast.List, ast.Tuple))
                for a in arg.elts
                if isinstance(a, ast.Constant)
            }
            if named & STATUS_NAMES:
                lines.append(node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            saves = any(isinstance(n, ast.Attribute) and n.attr == "save" for n in ast.walk(node))
            for n in ast.walk(node):
                if (
                    saves
                    and isinstance(n, ast.Attribute)
                    and isinstance(n.ctx, ast.Store)
                    and n.attr in STATUS_NAMES
                ):
                    lines.append(n.lineno)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.search(
                r"\bUPDATE\b[^;]*\bSET\b[^;]*\b(status|state)\s*=", node.value, re.IGNORECASE
            ):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_every_status_change_goes_through_transition():
    outside = {
        path: lines
        for path, source in _platform_sources()
        if (lines := _status_changes_outside_the_mechanism(source))
    }

    assert outside == {}


@pytest.mark.parametrize(
    "code",
    [
        "Order.objects.filter(pk=1).update(status='PAYING')",
        "changes.update(status=Status.FAILED)",
        "Refund.objects.bulk_update(rows, ['status', 'updated_at'])",
        "def f(order):\n    order.status = 'PAYING'\n    order.save()",
        "cursor.execute('UPDATE orders_order SET paid_at = %s, status = %s WHERE id = %s')",
    ],
)
def test_the_scan_sees_a_status_changed_around_the_mechanism(code):
    assert _status_changes_outside_the_mechanism(code)


def test_the_scan_leaves_other_updates_alone():
    code = "Order.objects.filter(pk=1, status='PAYING').update(poll_count=F('poll_count') + 1)\nrows.transition('SENDING')"

    assert _status_changes_outside_the_mechanism(code) == []


def test_sources_are_read_from_the_table():
    assert sources_of(GlobalTransaction, Status.CANCELLING) == [Status.TRYING]
    assert sources_of(GlobalTransaction, Status.TRYING) == []


def test_an_illegal_move_is_refused():
    with pytest.raises(
        IllegalTransition, match="^global transaction cannot move from CONFIRMED to CANCELLING$"
    ):
        check_transition(GlobalTransaction, Status.CONFIRMED, Status.CANCELLING)


@pytest.mark.django_db(databases="__all__")
def test_an_illegal_move_changes_no_row():
    gtx = _gtx("illegal")
    GlobalTransaction.objects.filter(pk=gtx.pk).transition(Status.CANCELLING)

    moved = GlobalTransaction.objects.filter(pk=gtx.pk).transition(
        Status.CONFIRMING, last_error="late"
    )

    assert moved == 0
    gtx.refresh_from_db()
    assert (gtx.status, gtx.last_error) == (Status.CANCELLING, "")


@pytest.mark.django_db(databases="__all__")
def test_a_status_never_changes_by_update():
    gtx = _gtx("update")

    with pytest.raises(
        TypeError, match=r"^a global transaction's status changes only through transition\(\)$"
    ):
        GlobalTransaction.objects.filter(pk=gtx.pk).update(status=Status.CONFIRMING)


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_of_concurrent_movers_exactly_one_wins():
    gtx = _gtx("race")

    def decide(new):
        return lambda: GlobalTransaction.objects.filter(pk=gtx.pk).transition(new, last_error=new)

    moved = run_at_once(*(decide(new) for new in (Status.CONFIRMING, Status.CANCELLING) * 3))

    assert sorted(moved) == [0, 0, 0, 0, 0, 1]
    gtx.refresh_from_db()
    assert gtx.last_error == gtx.status


@pytest.mark.django_db(databases="__all__")
def test_rows_locked_and_read_move_by_primary_key_alone_and_an_illegal_move_moves_none():
    first, second, done = _gtx("locked-1"), _gtx("locked-2"), _gtx("locked-3")
    GlobalTransaction.objects.filter(pk=done.pk).transition(Status.CANCELLING)
    rows = GlobalTransaction.objects.filter(pk__in=[first.pk, second.pk])

    with CaptureQueriesContext(connections["default"]) as queries:
        moved = rows.transition_locked(
            {first.pk: Status.TRYING, second.pk: Status.TRYING}, Status.CONFIRMING
        )
    with pytest.raises(IllegalTransition):
        GlobalTransaction.objects.transition_locked(
            {first.pk: Status.CONFIRMING, done.pk: Status.CANCELLING}, Status.CONFIRMED
        )

    assert moved == 2
    [update] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert "status" not in update.partition("WHERE")[2]  # no index on the status to walk
    assert list(
        GlobalTransaction.objects.filter(pk__in=[first.pk, second.pk, done.pk])
        .order_by("pk")
        .values_list("status", flat=True)
    ) == [Status.CONFIRMING, Status.CONFIRMING, Status.CANCELLING]
