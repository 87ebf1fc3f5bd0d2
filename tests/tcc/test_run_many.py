"""tcc.run_many: many business keys in one call, batched, each with its own answer."""

from __future__ import annotations

import itertools

import pytest
from django.db import connection

from paysys import tcc
from paysys.core.errors import InsufficientFunds
from paysys.tcc import barrier
from paysys.tcc.models import Barrier, GlobalTransaction
from paysys.tcc.registry import get_participant
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

Status = GlobalTransaction.Status
_keys = itertools.count(1)


def new_keys(n: int) -> list[str]:
    return [f"many:{next(_keys)}:{id(new_keys)}" for _ in range(n)]


def jobs(keys: list[str], refuse: set[str] = frozenset()) -> list[tuple[str, list[tcc.Branch]]]:
    """test.orders (a single op) then test.batched (a batched op), per key."""
    return [
        (
            key,
            [
                tcc.Branch("test.orders", {"amount": 1}),
                tcc.Branch("test.batched", {"refuse": key in refuse}),
            ],
        )
        for key in keys
    ]


def test_every_key_is_confirmed_with_one_call_of_the_batched_op_per_phase(ledgers):
    keys = new_keys(5)

    results = tcc.run_many("complete_order", jobs(keys))

    assert [type(r) for r in results] == [tcc.Outcome] * 5
    assert {r.status for r in results} == {Status.CONFIRMING} and not any(
        r.already for r in results
    )
    assert [GlobalTransaction.objects.get(xid=r.xid).business_key for r in results] == keys
    for r in results:  # the batched try ran once, in one call over all five
        assert ledgers("funds", r.xid) == [("test.batched", "try", 5)]
        assert ledgers("orders", r.xid) == [("test.orders", "try", 1)]

    assert run_phase_two([r.xid for r in results]) == 10
    for r in results:  # the confirms too: one call over the five
        assert ledgers("funds", r.xid) == [
            ("test.batched", "try", 5),
            ("test.batched", "confirm", 5),
        ]
    assert set(
        GlobalTransaction.objects.filter(business_key__in=keys).values_list("status", flat=True)
    ) == {Status.CONFIRMED}


def test_one_refused_try_cancels_only_its_own_transaction(ledgers):
    keys = new_keys(4)

    results = tcc.run_many("complete_order", jobs(keys, refuse={keys[2]}))

    refused = results[2]
    assert isinstance(refused, tcc.TryFailed) and refused.action == "test.batched"
    assert isinstance(refused.cause, InsufficientFunds) and not refused.is_transient
    assert [type(r) for i, r in enumerate(results) if i != 2] == [tcc.Outcome] * 3
    # the batch of four raised and rolled back; each try then ran alone (a call of one)
    for i, r in enumerate(results):
        assert ledgers("funds", r.xid) == ([] if i == 2 else [("test.batched", "try", 1)])
    run_phase_two([r.xid for r in results])
    statuses = dict(
        GlobalTransaction.objects.filter(business_key__in=keys).values_list(
            "business_key", "status"
        )
    )
    assert statuses == {
        keys[0]: Status.CONFIRMED,
        keys[1]: Status.CONFIRMED,
        keys[2]: Status.CANCELLED,
        keys[3]: Status.CONFIRMED,
    }
    assert ledgers("orders", refused.xid) == [
        ("test.orders", "try", 1),
        ("test.orders", "cancel", 1),
    ]


def test_a_key_given_twice_is_one_transaction_with_the_same_answer_twice(ledgers):
    key, other = new_keys(2)

    first, second, third = tcc.run_many("complete_order", jobs([key, other, key]))

    assert first == third and first.xid != second.xid
    assert GlobalTransaction.objects.filter(business_key=key).count() == 1
    assert ledgers("orders", first.xid) == [("test.orders", "try", 1)]


def test_a_confirmed_key_answers_already_while_the_new_keys_of_the_call_run(ledgers):
    done, fresh = new_keys(2)
    before = tcc.run("complete_order", business_key=done, branches=jobs([done])[0][1])

    again, new = tcc.run_many("complete_order", jobs([done, fresh]))

    assert again.already and again.xid == before.xid
    assert not new.already and new.status == Status.CONFIRMING
    assert ledgers("funds", before.xid) == [("test.batched", "try", 1)]  # not tried again


def test_the_coordinator_writes_a_constant_number_of_statements_for_any_batch(
    ledgers, django_assert_max_num_queries
):
    keys = new_keys(20)
    with django_assert_max_num_queries(
        6, connection=connection
    ):  # begin: 2 inserts + commit; decision: 1 update
        results = tcc.run_many("complete_order", jobs(keys))
    assert len({r.xid for r in results}) == 20


def test_a_batch_meeting_a_branch_that_already_ran_is_redone_op_by_op():
    spec = get_participant("test.orders")
    tried = ("x" * 31 + "1", 1, {"amount": 1})
    barrier.run_op(spec, xid=tried[0], branch=1, op=barrier.TRY, payload=tried[2])
    cancelled = ("x" * 31 + "2", 1, {"amount": 1})
    barrier.run_op(spec, xid=cancelled[0], branch=1, op=barrier.CANCEL, payload=cancelled[2])
    fresh = ("x" * 31 + "3", 1, {"amount": 1})

    results = barrier.run_all(spec, op=barrier.TRY, items=[tried, cancelled, fresh])

    assert results[0] == barrier.DUPLICATE and isinstance(results[1], barrier.BarrierRefused)
    assert results[2] == barrier.APPLIED
    assert Barrier.objects.using("orders").filter(xid=fresh[0], op=barrier.TRY).count() == 1


def test_cancels_are_never_batched():
    with pytest.raises(ValueError):
        barrier.run_batch(
            get_participant("test.orders"), op=barrier.CANCEL, items=[("y" * 32, 1, {})]
        )
