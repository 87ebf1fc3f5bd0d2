"""Recovery: expired tries cancelled, unfinished phase two resent on a backoff, a human flagged
past the limit, several passes at once never doing the same work twice."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from paysys import tcc
from paysys.tcc import barrier, coordinator, phase_two, recovery, registry
from paysys.tcc.models import GlobalTransaction, TransactionBranch
from paysys.tcc.registry import get_participant
from tests.concurrency import run_at_once
from tests.phase_two import run_phase_two
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

Status = GlobalTransaction.Status
_keys = itertools.count(1)


@pytest.fixture
def sent(monkeypatch, dispatched):
    """What recovery hands to the broker (the unit tests' broker is memory://). The initiator's
    own dispatch is dropped, as if its process died right after the decision."""
    items: list[dict] = []
    real_send = phase_two.resend

    def record(batch):
        items.extend(batch)
        return real_send(batch)

    monkeypatch.setattr(phase_two, "resend", record)
    return items


def new_key() -> str:
    return f"rec:{next(_keys)}:{id(new_key)}"


BRANCHES = [tcc.Branch("test.orders", {"amount": 1}), tcc.Branch("test.funds", {"amount": 994})]


def due(gtx: GlobalTransaction) -> None:
    GlobalTransaction.objects.filter(pk=gtx.pk).update(
        next_retry_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_transaction_trying_past_its_deadline_is_cancelled(ledgers, sent):
    # the coordinator died after trying branch 1 of 2
    gtx, rows = coordinator.begin("complete_order", business_key=new_key(), branches=BRANCHES)
    barrier.run_op(
        get_participant("test.orders"), xid=gtx.xid, branch=1, op="try", payload=rows[0].payload
    )
    assert recovery.recover_tcc()["cancelled"] == 0  # not yet past its deadline
    due(gtx)

    assert recovery.recover_tcc()["cancelled"] == 1
    gtx.refresh_from_db()
    assert gtx.status == Status.CANCELLING and "deadline" in gtx.last_error
    assert sorted((i["branch"], i["op"]) for i in sent) == [(1, "cancel"), (2, "cancel")]
    phase_two.apply_and_report(sent)
    gtx.refresh_from_db()
    assert gtx.status == Status.CANCELLED
    assert ledgers("orders", gtx.xid) == [("test.orders", "try", 1), ("test.orders", "cancel", 1)]
    assert ledgers("funds", gtx.xid) == []


def test_unfinished_phase_two_is_resent_with_backoff_until_done(ledgers, sent, fast_tcc):
    fast_tcc.TCC_RETRY_SCHEDULE = [5, 7, 11]
    outcome = tcc.run(
        "complete_order", business_key=new_key(), branches=BRANCHES
    )  # its tasks are lost
    gtx = GlobalTransaction.objects.get(xid=outcome.xid)
    assert recovery.recover_tcc()["resent"] == 0  # not due yet
    due(gtx)

    before = timezone.now()
    assert recovery.recover_tcc()["resent"] == 1
    gtx.refresh_from_db()
    assert gtx.attempts == 1 and gtx.next_retry_at >= before + timedelta(seconds=7)
    assert sorted((i["branch"], i["op"]) for i in sent) == [(1, "confirm"), (2, "confirm")]
    phase_two.apply_and_report(sent)
    phase_two.apply_and_report(sent)  # and a duplicate delivery of the resend
    gtx.refresh_from_db()
    assert gtx.status == Status.CONFIRMED
    assert ledgers("funds", gtx.xid) == [("test.funds", "try", 994), ("test.funds", "confirm", 994)]


def test_a_transaction_whose_branches_are_done_but_not_reported_is_finished(ledgers, sent):
    outcome = tcc.run("complete_order", business_key=new_key(), branches=BRANCHES)
    gtx = GlobalTransaction.objects.get(xid=outcome.xid)
    force_status(
        TransactionBranch.objects.filter(gtx=gtx), status=TransactionBranch.Status.CONFIRMED
    )
    due(gtx)
    assert recovery.recover_tcc() == {"cancelled": 0, "resent": 0, "flagged": 0, "finished": 1}
    gtx.refresh_from_db()
    assert gtx.status == Status.CONFIRMED and not sent


def test_past_the_retry_limit_a_human_is_flagged_and_can_retry_now(ledgers, sent, fast_tcc):
    fast_tcc.TCC_RETRY_SCHEDULE = [1, 1]
    outcome = tcc.run("complete_order", business_key=new_key(), branches=BRANCHES)
    gtx = GlobalTransaction.objects.get(xid=outcome.xid)
    for expected in ({"resent": 1}, {"resent": 1}, {"resent": 0, "flagged": 1}):
        due(gtx)
        totals = recovery.recover_tcc()
        assert {k: totals[k] for k in expected} == expected
    gtx.refresh_from_db()
    assert (
        gtx.needs_human and gtx.next_retry_at is None and gtx.status == Status.CONFIRMING
    )  # never dropped
    assert recovery.recover_tcc()["resent"] == 0  # no unseen retries while flagged
    assert len(sent) == 4

    assert recovery.retry_now([gtx.pk]) == 1
    gtx.refresh_from_db()
    assert not gtx.needs_human and gtx.attempts == 0 and gtx.next_retry_at is not None
    phase_two.apply_and_report(sent[-2:])
    gtx.refresh_from_db()
    assert gtx.status == Status.CONFIRMED


def test_failed_phase_two_ops_are_recorded_on_their_branch(ledgers, monkeypatch):
    outcome = tcc.run("complete_order", business_key=new_key(), branches=BRANCHES)
    spec = get_participant("test.funds")

    def broken(payload, *, xid):
        raise RuntimeError("funds confirm broke")

    monkeypatch.setitem(
        registry._participants, "test.funds", dataclasses.replace(spec, confirm=broken)
    )
    result = run_phase_two([outcome.xid])
    branch = TransactionBranch.objects.get(gtx__xid=outcome.xid, branch_no=2)
    assert result == 2 and branch.status == TransactionBranch.Status.PENDING
    assert branch.attempts == 1 and "funds confirm broke" in branch.last_error
    # the orders confirm in the same task still committed
    assert (
        TransactionBranch.objects.get(gtx__xid=outcome.xid, branch_no=1).status
        == TransactionBranch.Status.CONFIRMED
    )
    assert GlobalTransaction.objects.get(xid=outcome.xid).status == Status.CONFIRMING


def test_several_recovery_passes_at_once_resend_each_transaction_once(ledgers, sent):
    rows = [
        GlobalTransaction.objects.get(
            xid=tcc.run("complete_order", business_key=new_key(), branches=BRANCHES).xid
        )
        for _ in range(6)
    ]
    for gtx in rows:
        due(gtx)
    results = run_at_once(*[recovery.recover_tcc] * 4)
    assert sum(r["resent"] for r in results) == 6
    assert sorted(i["id"] for i in sent) == sorted(
        TransactionBranch.objects.filter(gtx__in=rows).values_list("id", flat=True)
    )
    assert set(
        GlobalTransaction.objects.filter(pk__in=[g.pk for g in rows]).values_list(
            "attempts", flat=True
        )
    ) == {1}


def test_recover_tcc_command_runs_one_pass(ledgers, capsys):
    call_command("recover_tcc")
    assert "resent" in capsys.readouterr().out


def test_barrier_rows_of_final_transactions_past_the_retention_are_purged(ledgers, settings):
    from paysys.tcc.models import Barrier

    settings.TCC_BARRIER_RETENTION_DAYS = 7
    done = tcc.run("complete_order", business_key=new_key(), branches=BRANCHES).xid
    run_phase_two([done])
    stuck = tcc.run(
        "complete_order", business_key=new_key(), branches=BRANCHES
    ).xid  # CONFIRMING: kept
    week_ago = timezone.now() - timedelta(days=8)
    for alias in ("orders", "funds"):
        Barrier.objects.using(alias).filter(xid__in=[done, stuck]).update(created_at=week_ago)

    assert recovery.purge_barriers() == 4  # try + confirm rows of 2 branches
    assert not Barrier.objects.using("funds").filter(xid=done).exists()
    assert Barrier.objects.using("funds").filter(xid=stuck).exists()
    assert recovery.purge_barriers() == 0


def test_a_phase_two_pass_claims_its_queues_decided_branches_in_one_batch(
    ledgers, sent, monkeypatch
):
    xids = [
        tcc.run("complete_order", business_key=new_key(), branches=BRANCHES).xid for _ in range(3)
    ]
    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run(
            "complete_order",
            business_key=new_key(),
            branches=[BRANCHES[0], tcc.Branch("test.funds", {"refuse": True})],
        )
    flagged = tcc.run("complete_order", business_key=new_key(), branches=BRANCHES).xid
    GlobalTransaction.objects.filter(xid=flagged).update(
        needs_human=True
    )  # only a human retries it
    batches: list[list[dict]] = []
    real_apply = phase_two.apply_ops
    monkeypatch.setattr(
        phase_two, "apply_ops", lambda items: batches.append(items) or real_apply(items)
    )

    assert phase_two.run_queue_pass("orders") == 4  # 3 confirms and 1 cancel, one batch
    assert [sorted(i["op"] for i in batch) for batch in batches] == [
        ["cancel", "confirm", "confirm", "confirm"]
    ]
    assert phase_two.run_queue_pass("orders") == 0
    assert phase_two.run_queue_pass("funds") == 4
    assert {
        g.xid: g.status for g in GlobalTransaction.objects.filter(xid__in=xids + [failed.value.xid])
    } == {
        **{xid: Status.CONFIRMED for xid in xids},
        failed.value.xid: Status.CANCELLED,
    }
    assert GlobalTransaction.objects.get(xid=flagged).status == Status.CONFIRMING


def test_a_branch_that_failed_once_is_left_to_recovery_s_backoff(ledgers, sent):
    xid = tcc.run("complete_order", business_key=new_key(), branches=BRANCHES).xid
    TransactionBranch.objects.filter(gtx__xid=xid, branch_no=2).update(
        attempts=1, last_error="funds down"
    )
    assert phase_two.run_queue_pass("funds") == 0
    assert phase_two.run_queue_pass("orders") == 1


def test_kicks_of_one_queue_coalesce_until_its_pass_starts(monkeypatch):
    from django.core.cache import cache

    from paysys.tcc import tasks

    kicked: list[str] = []
    monkeypatch.setattr(
        tasks.phase_two_pass, "apply_async", lambda args, **kw: kicked.append(args[0])
    )
    kick = phase_two.PHASE_TWO_PASS
    cache.delete(kick.key("funds"))
    for _ in range(3):
        kick.send("funds")
    kick.send("points")
    assert kicked == ["funds", "points"]
    cache.delete_many([kick.key("funds"), kick.key("points")])
