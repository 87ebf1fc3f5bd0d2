"""The branch barrier: participant code never sees duplicates, empty cancels or suspension."""

from __future__ import annotations

import uuid

import pytest

from paysys.tcc import barrier
from paysys.tcc.models import Barrier
from paysys.tcc.registry import get_participant
from tests.concurrency import run_at_once

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

FUNDS = "test.funds"


def op(xid: str, name: str, **payload) -> str:
    return barrier.run_op(get_participant(FUNDS), xid=xid, branch=2, op=name, payload=payload)


@pytest.fixture
def xid():
    return uuid.uuid4().hex


def test_try_then_duplicate_confirms_apply_once(ledgers, xid):
    assert op(xid, "try", amount=5) == barrier.APPLIED
    assert op(xid, "confirm", amount=5) == barrier.APPLIED
    assert op(xid, "confirm", amount=5) == barrier.DUPLICATE
    assert op(xid, "try", amount=5) == barrier.DUPLICATE
    assert ledgers("funds", xid) == [(FUNDS, "try", 5), (FUNDS, "confirm", 5)]


def test_duplicate_cancels_apply_once(ledgers, xid):
    op(xid, "try", amount=5)
    assert op(xid, "cancel", amount=5) == barrier.APPLIED
    assert op(xid, "cancel", amount=5) == barrier.DUPLICATE
    assert ledgers("funds", xid) == [(FUNDS, "try", 5), (FUNDS, "cancel", 5)]


def test_concurrent_duplicate_confirms_apply_once(ledgers, xid):
    op(xid, "try", amount=5)
    results = run_at_once(*[lambda: op(xid, "confirm", amount=5)] * 4)
    assert sorted(results) == [barrier.APPLIED] + [barrier.DUPLICATE] * 3
    assert ledgers("funds", xid).count((FUNDS, "confirm", 5)) == 1


def test_cancel_without_try_is_empty_and_the_late_try_is_refused(ledgers, xid):
    assert op(xid, "cancel", amount=5) == barrier.EMPTY
    with pytest.raises(barrier.BarrierRefused):
        op(xid, "try", amount=5)
    assert ledgers("funds", xid) == []  # nothing reserved, nothing released
    assert set(Barrier.objects.using("funds").filter(xid=xid).values_list("op", "reason")) == {
        ("try", "cancel"),
        ("cancel", "cancel"),
    }


def test_failed_try_leaves_nothing_and_its_cancel_is_empty(ledgers, xid):
    with pytest.raises(Exception, match="refuses"):
        op(xid, "try", amount=5, refuse=True)
    assert ledgers("funds", xid) == []
    assert (
        not Barrier.objects.using("funds").filter(xid=xid).exists()
    )  # rolled back with the business write
    assert op(xid, "cancel", amount=5) == barrier.EMPTY
