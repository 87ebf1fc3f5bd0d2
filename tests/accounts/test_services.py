"""Fund and points actions, phase by phase, as the TCC framework calls them."""

import pytest
from django.db import transaction

from accounts.models import EntryKind, FundAccount, FundEntry, PointsAccount, PointsEntry
from accounts.selectors import (
    fund_account_mismatches,
    points_account_get,
    points_account_mismatches,
)
from accounts.services import LedgerError
from paysys.core.errors import InsufficientFunds, InvalidInput
from paysys.core.money import points_for
from paysys.tcc.registry import BranchOp
from tests.accounts.helpers import account, batch, fund_payload, new_xid, phase, posted_sum

pytestmark = pytest.mark.django_db(databases="__all__")

MERCHANT = 7


def credit(owner_type, owner_id, amount, **extra):
    xid = new_xid()
    payload = fund_payload(owner_type, owner_id, amount, **extra)
    phase("funds.credit", "try", payload, xid)
    phase("funds.credit", "confirm", payload, xid)
    return xid


# --- credit -------------------------------------------------------------------------------------


def test_credit_try_reserves_pending_in_on_an_account_created_on_first_use():
    xid = new_xid()

    phase("funds.credit", "try", fund_payload("merchant", MERCHANT, 9940, out_trade_no="P1"), xid)

    acc = account("merchant", MERCHANT)
    assert (acc.balance, acc.frozen, acc.pending_in) == (0, 0, 9940)
    entry = FundEntry.objects.using("funds").get(account=acc)
    assert (
        entry.kind,
        entry.direction,
        entry.amount,
        entry.balance_after,
        entry.xid,
        entry.out_trade_no,
    ) == ("hold", "credit", 9940, 0, xid, "P1")


def test_credit_confirm_moves_the_reservation_into_the_balance():
    credit("merchant", MERCHANT, 9940, out_trade_no="P1", reason="order paid")
    xid = credit("merchant", MERCHANT, 60, out_trade_no="P2")

    acc = account("merchant", MERCHANT)
    assert (acc.balance, acc.frozen, acc.pending_in) == (10000, 0, 0)
    posted = (
        FundEntry.objects.using("funds").filter(account=acc, kind=EntryKind.POSTED).order_by("id")
    )
    assert [(e.amount, e.balance_after, e.out_trade_no) for e in posted] == [
        (9940, 9940, "P1"),
        (60, 10000, "P2"),
    ]
    assert posted[1].xid == xid
    assert posted[0].reason == "order paid"
    assert posted_sum(acc) == acc.balance


def test_credit_cancel_releases_the_reservation():
    xid = new_xid()
    payload = fund_payload("merchant", MERCHANT, 500)
    phase("funds.credit", "try", payload, xid)

    phase("funds.credit", "cancel", payload, xid)

    acc = account("merchant", MERCHANT)
    assert (acc.balance, acc.frozen, acc.pending_in) == (0, 0, 0)
    kinds = list(
        FundEntry.objects.using("funds")
        .filter(account=acc)
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == ["hold", "released"]


def test_a_second_merchant_is_a_separate_account():
    credit("merchant", MERCHANT, 100)
    credit("merchant", MERCHANT + 1, 7)

    assert account("merchant", MERCHANT).balance == 100
    assert account("merchant", MERCHANT + 1).balance == 7


# --- debit --------------------------------------------------------------------------------------


def test_debit_try_freezes_and_confirm_takes():
    credit("payer", 3, 1000)
    xid = new_xid()
    payload = fund_payload("payer", 3, 300, out_trade_no="P9")

    phase("funds.debit", "try", payload, xid)
    acc = account("payer", 3)
    assert (acc.balance, acc.frozen, acc.available) == (1000, 300, 700)

    phase("funds.debit", "confirm", payload, xid)
    acc = account("payer", 3)
    assert (acc.balance, acc.frozen, acc.available) == (700, 0, 700)
    last = FundEntry.objects.using("funds").filter(account=acc).latest("id")
    assert (last.kind, last.direction, last.amount, last.balance_after) == (
        "posted",
        "debit",
        300,
        700,
    )
    assert posted_sum(acc) == 700


def test_debit_cancel_unfreezes():
    credit("payer", 3, 1000)
    xid = new_xid()
    payload = fund_payload("payer", 3, 1000)
    phase("funds.debit", "try", payload, xid)

    phase("funds.debit", "cancel", payload, xid)

    acc = account("payer", 3)
    assert (acc.balance, acc.frozen) == (1000, 0)


def test_debit_try_refuses_more_than_available_and_changes_nothing():
    credit("payer", 3, 1000)
    phase("funds.debit", "try", fund_payload("payer", 3, 600), new_xid())
    entries_before = FundEntry.objects.using("funds").count()

    with pytest.raises(InsufficientFunds):
        phase("funds.debit", "try", fund_payload("payer", 3, 401), new_xid())  # available is 400

    acc = account("payer", 3)
    assert (acc.balance, acc.frozen) == (1000, 600)
    assert FundEntry.objects.using("funds").count() == entries_before
    phase("funds.debit", "try", fund_payload("payer", 3, 400), new_xid())  # exactly available: fine
    assert account("payer", 3).available == 0


def test_debit_of_a_wallet_that_does_not_exist_is_insufficient_and_creates_nothing():
    with pytest.raises(InsufficientFunds):
        phase("funds.debit", "try", fund_payload("payer", 404, 1), new_xid())

    assert not FundEntry.objects.using("funds").exists()


def test_pending_incoming_money_cannot_be_spent():
    xid = new_xid()
    phase("funds.credit", "try", fund_payload("payer", 3, 1000), xid)  # not confirmed yet

    with pytest.raises(InsufficientFunds):
        phase("funds.debit", "try", fund_payload("payer", 3, 1), new_xid())


# --- phase two without its reservation is a bug, never silently applied ---------------------


@pytest.mark.parametrize(
    "action,op",
    [
        ("funds.credit", "confirm"),
        ("funds.credit", "cancel"),
        ("funds.debit", "confirm"),
        ("funds.debit", "cancel"),
    ],
)
def test_confirm_or_cancel_without_a_reservation_raises_and_writes_nothing(action, op):
    credit("payer", 3, 1000)  # the account exists, with nothing reserved
    count = FundEntry.objects.using("funds").count()

    with pytest.raises(LedgerError):
        phase(action, op, fund_payload("payer", 3, 10), new_xid())

    acc = account("payer", 3)
    assert (acc.balance, acc.frozen, acc.pending_in) == (1000, 0, 0)
    assert FundEntry.objects.using("funds").count() == count


def test_the_same_phase_applied_twice_to_one_xid_is_refused_by_the_database():
    """The barrier makes phases idempotent; the entries' unique key refuses a second
    application even if code bypassed it."""
    from django.db import IntegrityError

    xid = new_xid()
    payload = fund_payload("merchant", MERCHANT, 100)
    phase("funds.credit", "try", payload, xid)

    with pytest.raises(IntegrityError):
        phase("funds.credit", "try", payload, xid)

    assert account("merchant", MERCHANT).pending_in == 100


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"owner_type": "bank", "owner_id": 1, "amount": 1, "currency": "CNY"}, "owner_type"),
        ({"owner_type": "payer", "owner_id": 0, "amount": 1, "currency": "CNY"}, "owner_id"),
        ({"owner_type": "payer", "owner_id": 1, "amount": 0, "currency": "CNY"}, "amount"),
        ({"owner_type": "payer", "owner_id": 1, "amount": -5, "currency": "CNY"}, "amount"),
        ({"owner_type": "payer", "owner_id": 1, "amount": "5", "currency": "CNY"}, "amount"),
        ({"owner_type": "payer", "owner_id": 1, "amount": True, "currency": "CNY"}, "amount"),
        ({"owner_type": "payer", "owner_id": 1, "amount": 5, "currency": "cny"}, "currency"),
        (
            {
                "owner_type": "payer",
                "owner_id": 1,
                "amount": 5,
                "currency": "CNY",
                "out_trade_no": "x" * 33,
            },
            "out_trade_no",
        ),
    ],
)
@pytest.mark.parametrize("action", ["funds.credit", "funds.debit"])
def test_a_malformed_payload_fails_the_try(action, payload, field):
    with pytest.raises(InvalidInput) as exc:
        phase(action, "try", payload, new_xid())

    assert field in exc.value.fields


# --- points -------------------------------------------------------------------------------------


def award(payer_id, points, op_sequence=("try", "confirm"), xid=None):
    xid = xid or new_xid()
    payload = {"payer_id": payer_id, "points": points, "out_trade_no": "P1"}
    for op in op_sequence:
        phase("points.award", op, payload, xid)
    return xid


def test_points_award_try_pending_then_confirm_credits():
    xid = award(5, 99, ("try",))
    acc = points_account_get(payer_id=5)
    assert (acc.balance, acc.pending) == (0, 99)

    award(5, 99, ("confirm",), xid=xid)

    acc = points_account_get(payer_id=5)
    assert (acc.balance, acc.pending) == (99, 0)
    assert list(
        PointsEntry.objects.using("points")
        .filter(account=acc)
        .order_by("id")
        .values_list("kind", "points", "balance_after")
    ) == [("hold", 99, 0), ("posted", 99, 99)]


def test_points_award_cancel_releases():
    award(5, 10, ("try", "cancel"))

    acc = points_account_get(payer_id=5)
    assert (acc.balance, acc.pending) == (0, 0)


def test_zero_points_change_nothing():
    award(5, 0, ("try", "confirm"))

    assert not PointsAccount.objects.using("points").exists()


def test_points_confirm_without_a_try_raises():
    award(5, 10)

    with pytest.raises(LedgerError):
        award(5, 10, ("confirm",))


def test_points_payload_is_checked():
    with pytest.raises(InvalidInput) as exc:
        phase("points.award", "try", {"payer_id": "5", "points": -1}, new_xid())

    assert set(exc.value.fields) == {"payer_id", "points"}


@pytest.mark.parametrize(
    "amount,currency,points",
    [
        (0, "CNY", 0),
        (99, "CNY", 0),
        (100, "CNY", 1),
        (199, "CNY", 1),
        (123456, "CNY", 1234),
        (500, "JPY", 500),
    ],
)
def test_points_for_is_one_point_per_whole_currency_unit(amount, currency, points):
    assert points_for(amount, currency) == points


def test_points_for_follows_the_setting(settings):
    settings.POINTS_PER_UNIT = 3

    assert points_for(250, "CNY") == 6


# --- many branches at once: credits and awards are batched (tcc.many) -------------------------


def credit_ops(*moves) -> list[BranchOp]:
    """``(owner_type, owner_id, amount)`` each, as branches of distinct transactions."""
    return [
        BranchOp(new_xid(), fund_payload(owner_type, owner_id, amount))
        for owner_type, owner_id, amount in moves
    ]


def test_a_credit_batch_over_several_accounts_runs_each_balance_in_op_order():
    credit("merchant", MERCHANT, 100)
    ops = credit_ops(
        ("merchant", MERCHANT, 10),
        ("merchant", 8, 20),
        ("merchant", MERCHANT, 30),
        ("payer", 3, 5),
        ("merchant", MERCHANT, 1),
    )

    batch("funds.credit", "try", ops)
    acc = account("merchant", MERCHANT)
    assert (acc.balance, acc.pending_in) == (100, 41)
    assert account("merchant", 8).pending_in == 20 and account("payer", 3).pending_in == 5

    batch("funds.credit", "confirm", ops)

    accounts = [account("merchant", MERCHANT), account("merchant", 8), account("payer", 3)]
    assert [(a.balance, a.pending_in) for a in accounts] == [(141, 0), (20, 0), (5, 0)]
    entries = FundEntry.objects.using("funds").filter(xid__in=[op.xid for op in ops]).order_by("id")
    assert [(e.xid, e.kind, e.amount) for e in entries] == [
        (op.xid, kind, op.payload["amount"]) for kind in ("hold", "posted") for op in ops
    ]
    # a hold leaves the balance; posts run through it in op order, per account
    assert [e.balance_after for e in entries] == [100, 0, 100, 0, 100] + [110, 20, 140, 5, 141]
    assert posted_sum(account("merchant", MERCHANT)) == 141
    assert fund_account_mismatches() == []


def test_a_credit_batch_creates_each_missing_account_once():
    credit("merchant", MERCHANT, 100)

    batch(
        "funds.credit",
        "try",
        credit_ops(
            ("merchant", 9, 1),
            ("merchant", MERCHANT, 2),
            ("merchant", 9, 3),
            ("payer", 9, 4),
            ("merchant", 9, 5),
        ),
    )

    assert (
        FundAccount.objects.using("funds").filter(owner_id=9).count() == 2
    )  # merchant #9, payer #9
    assert account("merchant", 9).pending_in == 9 and account("payer", 9).pending_in == 4
    assert account("merchant", MERCHANT).pending_in == 2
    assert fund_account_mismatches() == []


def test_a_confirm_batch_with_one_unreserved_op_applies_nothing_and_the_one_op_call_names_it():
    reserved = credit_ops(("merchant", MERCHANT, 10), ("merchant", 8, 20))
    batch("funds.credit", "try", reserved)
    unreserved = credit_ops(("merchant", MERCHANT, 5))  # its try never ran: pending_in 10 < 10 + 5
    before = FundEntry.objects.using("funds").count()

    with pytest.raises(LedgerError):
        batch("funds.credit", "confirm", reserved + unreserved)

    assert (account("merchant", MERCHANT).pending_in, account("merchant", 8).pending_in) == (10, 20)
    assert account("merchant", MERCHANT).balance == account("merchant", 8).balance == 0
    assert FundEntry.objects.using("funds").count() == before
    # what the framework does next: op by op, the bad one alone fails
    for op in reserved:
        batch("funds.credit", "confirm", [op])
    with pytest.raises(LedgerError, match=unreserved[0].xid):
        batch("funds.credit", "confirm", unreserved)
    assert (account("merchant", MERCHANT).balance, account("merchant", 8).balance) == (10, 20)


def test_a_credit_cancel_batch_releases_every_reservation():
    ops = credit_ops(("merchant", MERCHANT, 10), ("merchant", MERCHANT, 20))
    batch("funds.credit", "try", ops)

    batch("funds.credit", "cancel", ops)

    assert (account("merchant", MERCHANT).balance, account("merchant", MERCHANT).pending_in) == (
        0,
        0,
    )
    assert FundEntry.objects.using("funds").filter(kind="released").count() == 2
    assert fund_account_mismatches() == []


def test_one_malformed_payload_fails_the_whole_batch():
    ops = credit_ops(("merchant", MERCHANT, 10)) + [
        BranchOp(new_xid(), fund_payload("merchant", MERCHANT, 0))
    ]

    with pytest.raises(InvalidInput):
        batch("funds.credit", "try", ops)

    assert not FundAccount.objects.using("funds").exists()


def test_an_award_batch_skips_zero_points_and_runs_each_balance_in_op_order():
    ops = [
        BranchOp(new_xid(), {"payer_id": payer_id, "points": points})
        for payer_id, points in [(5, 10), (6, 3), (5, 0), (5, 7)]
    ]

    batch("points.award", "try", ops)
    batch("points.award", "confirm", ops)

    accounts = PointsAccount.objects.using("points").order_by("payer_id")
    assert [(a.payer_id, a.balance, a.pending) for a in accounts] == [(5, 17, 0), (6, 3, 0)]
    posted = PointsEntry.objects.using("points").filter(kind="posted").order_by("id")
    assert [(e.xid, e.points, e.balance_after) for e in posted] == [
        (ops[0].xid, 10, 10),
        (ops[1].xid, 3, 3),
        (ops[3].xid, 7, 17),
    ]
    assert points_account_mismatches() == []


def test_an_award_confirm_batch_beyond_the_reservation_applies_nothing():
    tried = BranchOp(new_xid(), {"payer_id": 5, "points": 10})
    batch("points.award", "try", [tried])

    with pytest.raises(LedgerError):
        batch("points.award", "confirm", [tried, BranchOp(new_xid(), {"payer_id": 5, "points": 1})])

    acc = points_account_get(payer_id=5)
    assert (acc.balance, acc.pending) == (0, 10)


def test_a_batch_of_zero_point_awards_creates_no_account():
    batch(
        "points.award", "try", [BranchOp(new_xid(), {"payer_id": 5, "points": 0}) for _ in range(3)]
    )

    assert not PointsAccount.objects.using("points").exists()


# --- entries agree with balances ----------------------------------------------------------------


def test_entries_sum_to_every_column_after_a_mix_of_actions(payer):
    from accounts.services import wallet_credit

    credit("merchant", MERCHANT, 1000)
    credit("payer", payer.pk, 4000)
    wallet_credit(
        payer_id=payer.pk, amount=1000, reason="welcome bonus", credited_by="test"
    )  # posted, no hold
    phase("funds.credit", "try", fund_payload("merchant", MERCHANT, 70), new_xid())  # left pending
    phase("funds.debit", "try", fund_payload("payer", payer.pk, 800), new_xid())  # left frozen
    cancelled = new_xid()
    phase("funds.debit", "try", fund_payload("payer", payer.pk, 100), cancelled)
    phase("funds.debit", "cancel", fund_payload("payer", payer.pk, 100), cancelled)
    taken = new_xid()
    phase("funds.debit", "try", fund_payload("payer", payer.pk, 1200), taken)
    phase("funds.debit", "confirm", fund_payload("payer", payer.pk, 1200), taken)

    assert fund_account_mismatches() == []
    wallet = account("payer", payer.pk)
    assert (wallet.balance, wallet.frozen) == (3800, 800)
    assert posted_sum(wallet) == wallet.balance


def test_mismatches_show_a_balance_changed_behind_the_entries_back():
    credit("merchant", MERCHANT, 1000)
    acc = account("merchant", MERCHANT)
    with transaction.atomic(using="funds"):
        type(acc).objects.using("funds").filter(pk=acc.pk).update(balance=999)

    [mismatch] = fund_account_mismatches()
    assert mismatch["actual"]["balance"] == 999 and mismatch["from_entries"]["balance"] == 1000


def test_points_entries_sum_to_balance_and_pending():
    award(5, 10)
    award(5, 7, ("try", "cancel"))
    award(5, 3, ("try",))
    assert points_account_mismatches() == []

    PointsAccount.objects.using("points").filter(payer_id=5).update(balance=11)

    [mismatch] = points_account_mismatches()
    assert mismatch["actual"] == {"balance": 11, "pending": 3, "frozen": 0}
    assert mismatch["from_entries"] == {"balance": 10, "pending": 3, "frozen": 0}
