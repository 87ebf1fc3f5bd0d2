"""Phase two at once (TCC_PHASE_TWO_INLINE): the process that decided runs the confirms on its
try threads; what it cannot finish in time goes to the participants' workers, and the barrier
applies every confirm once whichever runs it."""

from __future__ import annotations

import itertools
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from paysys import tcc
from paysys.tcc import phase_two
from paysys.tcc.models import GlobalTransaction, TransactionBranch
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

Status, BranchStatus = GlobalTransaction.Status, TransactionBranch.Status
_keys = itertools.count(1)


@pytest.fixture
def inline(settings, fast_tcc, dispatched):
    """Confirms at once; the queues handed to the participants' workers are recorded."""
    settings.TCC_PHASE_TWO_INLINE = True
    return dispatched


def branches(**extra) -> list[tcc.Branch]:
    return [
        tcc.Branch(action, {"amount": amount, **extra.get(action.split(".")[1], {})})
        for action, amount in (("test.orders", 1), ("test.funds", 994), ("test.points", 10))
    ]


def statuses(xid: str) -> dict[str, str]:
    return dict(TransactionBranch.objects.filter(gtx__xid=xid).values_list("action", "status"))


def test_the_confirms_run_before_run_returns_and_nothing_is_left_to_the_workers(ledgers, inline):
    outcome = tcc.run("complete_order", business_key=f"inline:{next(_keys)}", branches=branches())

    assert GlobalTransaction.objects.get(xid=outcome.xid).status == Status.CONFIRMED
    assert set(statuses(outcome.xid).values()) == {BranchStatus.CONFIRMED}
    assert ledgers("funds", outcome.xid) == [
        ("test.funds", "try", 994),
        ("test.funds", "confirm", 994),
    ]
    assert inline == []  # no phase-two pass needed
    assert run_phase_two([outcome.xid]) == 0


def test_many_transactions_are_confirmed_at_once_in_one_call(ledgers, inline):
    jobs = [(f"inline:{next(_keys)}", branches()) for _ in range(5)]

    outcomes = tcc.run_many("complete_order", jobs)

    assert {GlobalTransaction.objects.get(xid=o.xid).status for o in outcomes} == {Status.CONFIRMED}
    assert inline == []


def test_a_confirm_too_slow_for_the_deadline_goes_to_its_worker_and_applies_once(ledgers, inline):
    """The funds database answers after the try timeout: orders and points are confirmed here,
    funds is handed to its worker; the late confirm and the worker's run make one confirm."""
    started = time.monotonic()
    outcome = tcc.run(
        "complete_order",
        business_key=f"inline:{next(_keys)}",
        branches=branches(funds={"confirm_sleep": 1.5}),
    )

    assert time.monotonic() - started < 1.5 + 1  # waited for the deadline (1 s), not for funds
    assert statuses(outcome.xid) == {
        "test.orders": BranchStatus.CONFIRMED,
        "test.funds": BranchStatus.PENDING,
        "test.points": BranchStatus.CONFIRMED,
    }
    assert GlobalTransaction.objects.get(xid=outcome.xid).status == Status.CONFIRMING
    assert inline == ["funds"]  # its worker is kicked, and no attempt was counted against it
    assert TransactionBranch.objects.get(gtx__xid=outcome.xid, action="test.funds").attempts == 0

    time.sleep(1.5)  # the slow confirm commits meanwhile
    assert phase_two.run_queue_pass("funds") == 1  # the worker's pass: a duplicate for the barrier

    assert GlobalTransaction.objects.get(xid=outcome.xid).status == Status.CONFIRMED
    assert ledgers("funds", outcome.xid) == [
        ("test.funds", "try", 994),
        ("test.funds", "confirm", 994),
    ]


def test_a_refused_try_is_cancelled_before_the_refusal_is_raised(ledgers, inline):
    """A participant refused (a business answer: every database answered): the cancels run here,
    so what the earlier tries held is free when the caller hears the refusal and may try again."""
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run(
            "complete_order",
            business_key=f"inline:{next(_keys)}",
            branches=branches(points={"refuse": True}),
        )

    xid = failed.value.xid
    assert GlobalTransaction.objects.get(xid=xid).status == Status.CANCELLED
    assert set(statuses(xid).values()) == {BranchStatus.CANCELLED}
    assert ledgers("funds", xid) == [("test.funds", "try", 994), ("test.funds", "cancel", 994)]
    assert ledgers("points", xid) == []  # its try rolled back with its barrier row: an empty cancel
    assert inline == []  # nothing left to the workers
    assert run_phase_two([xid]) == 0


def test_a_try_that_did_not_answer_leaves_its_cancels_to_the_workers(ledgers, inline):
    """No wait here on a database that did not answer in time: the workers cancel."""
    started = time.monotonic()
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run(
            "complete_order",
            business_key=f"inline:{next(_keys)}",
            branches=branches(points={"try_sleep": 1.5}),
        )

    assert time.monotonic() - started < 1.5 + 1
    assert GlobalTransaction.objects.get(xid=failed.value.xid).status == Status.CANCELLING
    assert sorted(inline) == ["funds", "orders", "points"]


def test_claimed_branches_are_recorded_by_primary_key_alone(ledgers, inline):
    """The claim locked them: a status predicate would let MariaDB walk the status index through
    the branches other claims hold (it does when few are unfinished), and two claims deadlocked."""
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("the claim locks its branches only where the database skips locked rows")
    with CaptureQueriesContext(connection) as queries:
        outcome = tcc.run(
            "complete_order", business_key=f"inline:{next(_keys)}", branches=branches()
        )

    [record] = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("UPDATE") and "tcc_transactionbranch" in q["sql"]
    ]
    assert "status" not in record.partition("WHERE")[2]
    assert set(statuses(outcome.xid).values()) == {BranchStatus.CONFIRMED}
