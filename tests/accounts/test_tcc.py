"""The accounts participants through the TCC framework: registered by name, behind the barrier."""

import uuid

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import FundAccount, FundEntry, PointsAccount, PointsEntry
from accounts.selectors import fund_account_mismatches, points_account_get
from paysys import tcc
from paysys.core.errors import InsufficientFunds
from paysys.tcc import barrier
from paysys.tcc.registry import BranchOp, get_participant, is_many
from tests.accounts.helpers import account, batch, fund_payload, new_xid, phase
from tests.concurrency import run_at_once
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

PAYER, MERCHANT, PRICE = 11, 22, 1000


def fund_wallet(amount: int) -> None:
    xid = new_xid()
    phase("funds.credit", "try", fund_payload("payer", PAYER, amount), xid)
    phase("funds.credit", "confirm", fund_payload("payer", PAYER, amount), xid)


def balance_payment(key: str, amount: int = PRICE, fee: int = 6) -> tcc.Outcome:
    """What a balance payment asks of funds and points (orders' own branch is tcc-flows')."""
    return tcc.run(
        "test_balance_payment",
        business_key=f"test:{key}",
        branches=[
            tcc.Branch("funds.debit", fund_payload("payer", PAYER, amount, out_trade_no=key)),
            tcc.Branch(
                "funds.credit", fund_payload("merchant", MERCHANT, amount - fee, out_trade_no=key)
            ),
            tcc.Branch(
                "points.award", {"payer_id": PAYER, "points": amount // 100, "out_trade_no": key}
            ),
        ],
    )


def test_the_three_actions_are_registered_by_name_on_their_own_alias_and_queue():
    for action, alias in [
        ("funds.credit", "funds"),
        ("funds.debit", "funds"),
        ("points.award", "points"),
    ]:
        spec = get_participant(action)
        assert (spec.alias, spec.queue) == (alias, alias)


def test_a_confirmed_transaction_moves_wallet_merchant_and_points_once():
    fund_wallet(5000)

    outcome = balance_payment("P1")
    assert run_phase_two([outcome.xid]) == 3
    assert run_phase_two([outcome.xid]) == 0  # nothing left: a second finish changes nothing

    wallet, merchant = account("payer", PAYER), account("merchant", MERCHANT)
    assert (wallet.balance, wallet.frozen) == (4000, 0)
    assert (merchant.balance, merchant.pending_in) == (994, 0)
    points = points_account_get(payer_id=PAYER)
    assert (points.balance, points.pending) == (10, 0)
    assert FundEntry.objects.using("funds").filter(xid=outcome.xid, kind="posted").count() == 2
    assert fund_account_mismatches() == []


def test_insufficient_balance_cancels_and_changes_nothing():
    fund_wallet(500)

    with pytest.raises(tcc.TryFailed) as failed:
        balance_payment("P1")
    assert isinstance(failed.value.cause, InsufficientFunds) and not failed.value.is_transient
    run_phase_two([failed.value.xid])

    wallet = account("payer", PAYER)
    assert (wallet.balance, wallet.frozen) == (500, 0)
    assert (
        not FundEntry.objects.using("funds").filter(xid=failed.value.xid).exists()
    )  # its try never reserved
    assert points_account_get(payer_id=PAYER) is None
    assert fund_account_mismatches() == []


def test_a_cancel_after_the_tries_releases_every_reservation():
    """A failing later branch (a points payload the try refuses) cancels the debit and credit."""
    fund_wallet(5000)

    with pytest.raises(tcc.TryFailed) as failed:
        tcc.run(
            "test_balance_payment",
            business_key="test:P2",
            branches=[
                tcc.Branch("funds.debit", fund_payload("payer", PAYER, PRICE)),
                tcc.Branch("funds.credit", fund_payload("merchant", MERCHANT, PRICE)),
                tcc.Branch("points.award", {"payer_id": PAYER, "points": -1}),
            ],
        )
    run_phase_two([failed.value.xid])

    wallet, merchant = account("payer", PAYER), account("merchant", MERCHANT)
    assert (wallet.balance, wallet.frozen, merchant.balance, merchant.pending_in) == (5000, 0, 0, 0)
    kinds = (
        FundEntry.objects.using("funds")
        .filter(xid=failed.value.xid)
        .values_list("direction", "kind")
    )
    assert sorted(kinds) == [
        ("credit", "hold"),
        ("credit", "released"),
        ("debit", "hold"),
        ("debit", "released"),
    ]


def run_op(action: str, op: str, payload: dict, xid: str, branch: int = 1) -> str:
    return barrier.run_op(get_participant(action), xid=xid, branch=branch, op=op, payload=payload)


@pytest.mark.parametrize(
    "action,payload",
    [
        ("funds.debit", fund_payload("payer", PAYER, 300)),
        ("funds.credit", fund_payload("merchant", MERCHANT, 300)),
        ("points.award", {"payer_id": PAYER, "points": 3}),
    ],
)
def test_duplicate_confirms_and_cancels_apply_once(action, payload):
    fund_wallet(1000)
    confirmed, cancelled = new_xid(), new_xid()
    run_op(action, "try", payload, confirmed)
    run_op(action, "try", payload, cancelled)

    assert [run_op(action, "confirm", payload, confirmed) for _ in range(3)] == [
        "applied",
        "duplicate",
        "duplicate",
    ]
    assert [run_op(action, "cancel", payload, cancelled) for _ in range(3)] == [
        "applied",
        "duplicate",
        "duplicate",
    ]

    if action == "points.award":
        points = points_account_get(payer_id=PAYER)
        assert (points.balance, points.pending) == (3, 0)
        assert PointsEntry.objects.using("points").filter(kind="posted").count() == 1
    else:
        owner = account(payload["owner_type"], payload["owner_id"])
        assert (owner.frozen, owner.pending_in) == (0, 0)
        assert owner.balance == {"funds.debit": 700, "funds.credit": 300}[action]
    assert fund_account_mismatches() == []


def test_a_cancel_before_its_try_is_empty_and_the_late_try_freezes_nothing():
    fund_wallet(1000)
    xid = new_xid()
    payload = fund_payload("payer", PAYER, 600)

    assert run_op("funds.debit", "cancel", payload, xid) == "empty"
    with pytest.raises(barrier.BarrierRefused):
        run_op("funds.debit", "try", payload, xid)

    wallet = account("payer", PAYER)
    assert (wallet.balance, wallet.frozen) == (1000, 0)
    assert not FundEntry.objects.using("funds").filter(xid=xid).exists()


def test_forty_balance_payments_from_a_wallet_that_affords_ten_confirm_exactly_ten(settings):
    # 40 tries queue on one wallet row on a shared 2-core machine: this test is about who gets
    # through, not about latency, so a slow try must not count as a refusal
    settings.TCC_TRY_TIMEOUT = 10
    fund_wallet(10 * PRICE)

    def pay():
        try:
            return balance_payment(uuid.uuid4().hex[:16]).xid
        except tcc.TryFailed as failed:
            assert isinstance(failed.cause, InsufficientFunds), failed
            return None

    xids = run_at_once(*[pay for _ in range(40)], timeout=120)
    run_phase_two()

    assert len([x for x in xids if x]) == 10
    wallet, merchant = account("payer", PAYER), account("merchant", MERCHANT)
    assert (wallet.balance, wallet.frozen) == (0, 0)
    assert (merchant.balance, merchant.pending_in) == (10 * (PRICE - 6), 0)
    assert points_account_get(payer_id=PAYER).balance == 10 * (PRICE // 100)
    assert fund_account_mismatches() == []


# --- batched ops: the framework's one call applies many branches with set-based SQL ------------


def test_every_op_of_a_payment_is_batched():
    for action in ("funds.credit", "funds.debit", "points.award"):
        spec = get_participant(action)
        assert all(is_many(spec.op(name)) for name in ("try", "confirm", "cancel"))


def test_a_batch_of_debits_freezes_all_or_nothing_and_one_short_wallet_is_named_alone():
    """Two wallets in one batch: one short sinks the batch (nothing frozen), and alone it is the
    one refused, with the amount it lacks; the framework redoes a failed batch op by op."""
    fund_wallet(PRICE)
    other = PAYER + 1
    xid = new_xid()
    phase("funds.credit", "try", fund_payload("payer", other, 100), xid)
    phase("funds.credit", "confirm", fund_payload("payer", other, 100), xid)
    ops = [
        BranchOp(new_xid(), fund_payload("payer", PAYER, PRICE)),
        BranchOp(new_xid(), fund_payload("payer", other, 101)),
    ]

    with pytest.raises(InsufficientFunds):
        batch("funds.debit", "try", ops)
    assert (account("payer", PAYER).frozen, account("payer", other).frozen) == (0, 0)

    batch("funds.debit", "try", ops[:1])
    with pytest.raises(InsufficientFunds, match="available balance is below 101"):
        batch("funds.debit", "try", ops[1:])
    batch("funds.debit", "confirm", ops[:1])
    assert (account("payer", PAYER).balance, account("payer", PAYER).frozen) == (0, 0)
    assert account("payer", other).balance == 100
    assert fund_account_mismatches() == []


@pytest.mark.parametrize("accounts_exist,max_queries", [(True, 6), (False, 8)])
def test_twenty_credits_over_three_accounts_take_a_constant_handful_of_queries(
    django_assert_max_num_queries, accounts_exist, max_queries
):
    """Ids by key and one lock query (new accounts: + one insert and ids again), one UPDATE per
    account, one insert of all entries: not a round of queries per op."""
    owners = [("merchant", MERCHANT), ("merchant", MERCHANT + 1), ("payer", PAYER)]
    if accounts_exist:
        for owner in owners:
            phase("funds.credit", "try", fund_payload(*owner, 1), new_xid())
    ops = [BranchOp(new_xid(), fund_payload(*owners[i % 3], 10 + i)) for i in range(20)]
    spec = get_participant("funds.credit")

    for op in ("try", "confirm"):
        with (
            transaction.atomic(using="funds"),
            django_assert_max_num_queries(max_queries if op == "try" else 6, using="funds"),
        ):
            spec.apply(op, ops)

    assert sum(account(*owner).balance for owner in owners) == sum(10 + i for i in range(20))
    assert FundEntry.objects.using("funds").filter(xid__in=[op.xid for op in ops]).count() == 40
    assert fund_account_mismatches() == []


def test_twenty_awards_over_three_payers_take_a_constant_handful_of_queries(
    django_assert_max_num_queries,
):
    ops = [BranchOp(new_xid(), {"payer_id": PAYER + i % 3, "points": 1 + i}) for i in range(20)]
    spec = get_participant("points.award")

    with transaction.atomic(using="points"), django_assert_max_num_queries(8, using="points"):
        spec.apply("try", ops)
    with transaction.atomic(using="points"), django_assert_max_num_queries(6, using="points"):
        spec.apply("confirm", ops)

    assert sum(PointsAccount.objects.using("points").values_list("balance", flat=True)) == sum(
        range(1, 21)
    )


def _lookups_by_key(queries) -> list[str]:
    """The queries that find accounts by owner (not by id)."""
    return [q["sql"] for q in queries if "owner_type" in q["sql"].partition("WHERE")[2]]


def test_an_account_id_is_read_once_per_process_and_again_when_it_went_stale():
    """A key's id never changes, so it is looked up once and remembered; a remembered id that no
    longer holds its key (here the account deleted and opened again, as a flushed test database
    or bench_tcc's cleanup does) is noticed under the lock and looked up again."""
    spec = get_participant("funds.credit")
    fund_wallet(PRICE)
    with transaction.atomic(using="funds"), CaptureQueriesContext(connections["funds"]) as known:
        spec.apply("try", [BranchOp(new_xid(), fund_payload("payer", PAYER, 5))])
    assert _lookups_by_key(known.captured_queries) == []

    remembered = account("payer", PAYER).pk
    FundEntry.objects.using("funds").all().delete()
    FundAccount.objects.using("funds").all().delete()
    # the payer's remembered id now holds another account
    FundAccount.objects.using("funds").create(
        pk=remembered, owner_type="merchant", owner_id=MERCHANT, currency="CNY"
    )
    fund_wallet(PRICE)  # the payer's account again, under a new id

    assert account("payer", PAYER).balance == PRICE
    assert account("merchant", MERCHANT).balance == 0
    assert fund_account_mismatches() == []
