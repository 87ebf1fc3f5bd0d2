"""tcc.run: tries, the decision, phase two, business keys, attempts, timeouts."""

from __future__ import annotations

import itertools

import pytest
from django.db import IntegrityError, transaction

from paysys import tcc
from paysys.core.errors import InsufficientFunds
from paysys.tcc import barrier
from paysys.tcc.models import GlobalTransaction, TransactionBranch
from paysys.tcc.registry import get_participant
from tests.concurrency import run_at_once
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

Status = GlobalTransaction.Status
_keys = itertools.count(1)


@pytest.fixture
def key():
    return f"test:{next(_keys)}:{id(key)}"


def branches(**overrides) -> list[tcc.Branch]:
    """orders, funds, points; ``funds={"refuse": True}`` etc. adds to one branch's payload."""
    return [
        tcc.Branch(action, {"amount": amount, **overrides.get(action.split(".")[1], {})})
        for action, amount in (("test.orders", 1), ("test.funds", 994), ("test.points", 10))
    ]


def test_all_tries_succeed_confirm_is_decided_then_phase_two_confirms_once(ledgers, key):
    outcome = tcc.run("complete_order", business_key=key, branches=branches())

    assert (outcome.status, outcome.attempt, outcome.already) == (Status.CONFIRMING, 1, False)
    gtx = GlobalTransaction.objects.get(xid=outcome.xid)
    assert gtx.confirmed_key == key and gtx.decided_at is not None
    assert ledgers("funds", outcome.xid) == [("test.funds", "try", 994)]

    assert run_phase_two([outcome.xid]) == 3
    assert run_phase_two([outcome.xid]) == 0
    gtx.refresh_from_db()
    assert gtx.status == Status.CONFIRMED and gtx.next_retry_at is None
    assert set(gtx.branches.values_list("status", flat=True)) == {
        TransactionBranch.Status.CONFIRMED
    }
    assert ledgers("orders", outcome.xid) == [
        ("test.orders", "try", 1),
        ("test.orders", "confirm", 1),
    ]
    assert ledgers("points", outcome.xid) == [
        ("test.points", "try", 10),
        ("test.points", "confirm", 10),
    ]


def test_a_refused_try_cancels_every_branch(ledgers, key):
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run("complete_order", business_key=key, branches=branches(funds={"refuse": True}))

    assert failed.value.action == "test.funds" and isinstance(failed.value.cause, InsufficientFunds)
    assert not failed.value.is_transient
    xid = failed.value.xid
    gtx = GlobalTransaction.objects.get(xid=xid)
    assert gtx.status == Status.CANCELLING and "test.funds" in gtx.last_error
    assert gtx.branches.get(branch_no=2).status == TransactionBranch.Status.TRY_FAILED

    run_phase_two([xid])
    gtx.refresh_from_db()
    assert gtx.status == Status.CANCELLED and gtx.confirmed_key is None
    assert ledgers("orders", xid) == [("test.orders", "try", 1), ("test.orders", "cancel", 1)]
    assert ledgers("funds", xid) == []  # its try rolled back: empty cancel
    assert ledgers("points", xid) == []  # never tried: empty cancel, and a late try is refused
    with pytest.raises(barrier.BarrierRefused):
        barrier.run_op(
            get_participant("test.points"), xid=xid, branch=3, op="try", payload={"amount": 10}
        )


def test_after_a_cancel_the_next_run_is_a_new_attempt_and_the_old_xid_is_barred(ledgers, key):
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run("complete_order", business_key=key, branches=branches(points={"refuse": True}))
    old_xid = failed.value.xid
    run_phase_two([old_xid])

    outcome = tcc.run("complete_order", business_key=key, branches=branches())
    assert outcome.attempt == 2 and outcome.xid != old_xid
    # the cancelled attempt's tries are all barred, even for branches that did try
    for no, action in enumerate(("test.orders", "test.funds", "test.points"), 1):
        with pytest.raises(barrier.BarrierRefused):
            barrier.run_op(get_participant(action), xid=old_xid, branch=no, op="try", payload={})


def test_a_confirmed_key_is_never_run_again(ledgers, key):
    first = tcc.run("complete_order", business_key=key, branches=branches())
    again = tcc.run("complete_order", business_key=key, branches=branches())
    assert again.already and again.xid == first.xid
    assert GlobalTransaction.objects.filter(business_key=key).count() == 1
    assert ledgers("funds", first.xid) == [("test.funds", "try", 994)]


def test_an_open_transaction_is_resumed_not_duplicated(ledgers, key):
    gtx, rows = tcc_begin(key)
    # the first run died after trying branch 1
    barrier.run_op(
        get_participant("test.orders"), xid=gtx.xid, branch=1, op="try", payload=rows[0].payload
    )

    outcome = tcc.run("complete_order", business_key=key, branches=branches())
    assert outcome.xid == gtx.xid and not outcome.already
    assert ledgers("orders", gtx.xid) == [
        ("test.orders", "try", 1)
    ]  # the resumed try was a duplicate
    assert ledgers("funds", gtx.xid) == [("test.funds", "try", 994)]


def tcc_begin(key: str):
    from paysys.tcc.coordinator import begin

    return begin("complete_order", business_key=key, branches=branches())


def test_the_database_refuses_a_second_confirmed_transaction_per_key(ledgers, key):
    tcc.run("complete_order", business_key=key, branches=branches())
    other = GlobalTransaction.objects.create(
        xid="f" * 32,
        name="x",
        business_key=key,
        attempt=9,
        deadline=GlobalTransaction.objects.get(business_key=key).deadline,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        GlobalTransaction.objects.filter(pk=other.pk).update(confirmed_key=key)


def test_concurrent_runs_of_one_key_confirm_one_transaction(ledgers, key):
    outcomes = run_at_once(
        *[lambda: tcc.run("complete_order", business_key=key, branches=branches())] * 6
    )
    assert len({o.xid for o in outcomes}) == 1
    assert GlobalTransaction.objects.filter(business_key=key).count() == 1
    run_phase_two()
    xid = outcomes[0].xid
    assert ledgers("funds", xid) == [("test.funds", "try", 994), ("test.funds", "confirm", 994)]


def test_run_refuses_an_open_transaction_on_a_participant_alias(ledgers, key):
    with (
        transaction.atomic(using="orders"),
        pytest.raises(RuntimeError, match="open transaction on orders"),
    ):
        tcc.run("complete_order", business_key=key, branches=branches())
    assert not GlobalTransaction.objects.filter(business_key=key).exists()


def test_a_try_slower_than_the_timeout_fails_and_is_cancelled_once_it_commits(
    ledgers, key, fast_tcc
):
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run("complete_order", business_key=key, branches=branches(points={"try_sleep": 2}))
    assert isinstance(failed.value.cause, TimeoutError) and failed.value.is_transient
    xid = failed.value.xid
    # the cancel reaches points while the slow try holds its barrier row: it waits for the try's
    # commit, then releases what the try reserved (a try that never reached the database is
    # refused instead: test_barrier and the fault tests)
    run_phase_two([xid])
    assert ledgers("points", xid) == [("test.points", "try", 10), ("test.points", "cancel", 10)]
    assert GlobalTransaction.objects.get(xid=xid).status == Status.CANCELLED


def test_the_coordinator_database_not_answering_is_unavailable_and_nothing_runs(
    ledgers, key, monkeypatch
):
    from django.db import OperationalError

    from paysys.core.errors import Unavailable
    from paysys.tcc import coordinator

    def down(*args, **kwargs):
        raise OperationalError(2003, "Can't connect to MySQL server")

    monkeypatch.setattr(coordinator, "_create_many", down)
    with pytest.raises(Unavailable):
        tcc.run("complete_order", business_key=key, branches=branches())
    assert not GlobalTransaction.objects.filter(business_key=key).exists()


def test_a_resumed_transaction_gets_a_new_deadline(ledgers, key):
    gtx, _ = tcc_begin(key)
    GlobalTransaction.objects.filter(pk=gtx.pk).update(
        deadline=gtx.created_at, next_retry_at=gtx.created_at
    )
    resumed, _ = tcc_begin(key)
    assert resumed.pk == gtx.pk and resumed.deadline > gtx.deadline
    assert GlobalTransaction.objects.get(pk=gtx.pk).next_retry_at == resumed.deadline


def test_a_try_queued_behind_a_stuck_one_times_out_and_never_runs_other_aliases_unaffected(
    ledgers, fast_tcc, fresh_try_threads
):
    import time

    fast_tcc.TCC_TRY_THREADS = 1
    with pytest.raises(tcc.TryFailed):  # holds the only points thread for 2.5 s
        tcc.run(
            "complete_order",
            business_key=f"stuck:{id(ledgers)}",
            branches=branches(points={"try_sleep": 2.5}),
        )
    started = time.monotonic()
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run("complete_order", business_key=f"queued:{id(ledgers)}", branches=branches())
    assert failed.value.action == "test.points" and isinstance(failed.value.cause, TimeoutError)
    assert time.monotonic() - started < 1 + 1  # orders and funds had threads of their own
    xid = failed.value.xid
    assert ledgers("funds", xid) == [("test.funds", "try", 994)]
    time.sleep(2)  # the stuck try ends; the queued one was dropped, not run late
    assert ledgers("points", xid) == []
    run_phase_two()
