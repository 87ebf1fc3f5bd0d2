"""Many workers at once on one account: the conditional UPDATEs and row locks let exactly as many
through as the money allows, and the entries still add up."""

import pytest

from accounts.models import FundAccount, FundEntry
from accounts.selectors import fund_account_mismatches
from paysys.core.errors import InsufficientFunds
from paysys.tcc.registry import BranchOp
from tests.accounts.helpers import account, batch, fund_payload, new_xid, phase, posted_sum
from tests.concurrency import run_at_once

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

PRICE = 250


def pay_from_wallet(payer_id: int):
    """A balance payment's funds side: freeze (try), then take (confirm)."""

    def call() -> bool:
        xid = new_xid()
        payload = fund_payload("payer", payer_id, PRICE)
        try:
            phase("funds.debit", "try", payload, xid)
        except InsufficientFunds:
            return False
        phase("funds.debit", "confirm", payload, xid)
        return True

    return call


def test_forty_debits_of_a_wallet_that_affords_ten_let_exactly_ten_through():
    xid = new_xid()
    phase("funds.credit", "try", fund_payload("payer", 1, 10 * PRICE), xid)
    phase("funds.credit", "confirm", fund_payload("payer", 1, 10 * PRICE), xid)

    results = run_at_once(*[pay_from_wallet(1) for _ in range(40)], timeout=120)

    assert results.count(True) == 10 and results.count(False) == 30
    wallet = account("payer", 1)
    assert (wallet.balance, wallet.frozen, wallet.pending_in) == (0, 0, 0)
    assert (
        FundEntry.objects.using("funds")
        .filter(account=wallet, kind="posted", direction="debit")
        .count()
        == 10
    )
    assert posted_sum(wallet) == 0
    assert fund_account_mismatches() == []


def test_concurrent_first_credits_create_one_account():
    def credit_try():
        phase("funds.credit", "try", fund_payload("merchant", 42, 10), new_xid())

    run_at_once(*[credit_try for _ in range(8)], timeout=60)

    assert (
        FundAccount.objects.using("funds").filter(owner_type="merchant", owner_id=42).count() == 1
    )
    assert account("merchant", 42).pending_in == 80
    assert fund_account_mismatches() == []


def test_concurrent_credit_batches_on_shared_merchant_accounts_add_up():
    """Each batch locks its accounts in key order, whatever the order of its ops, so batches
    sharing accounts queue instead of deadlocking: every op of every batch is applied once."""
    for merchant_id in (42, 43):
        phase("funds.credit", "try", fund_payload("merchant", merchant_id, 1), xid := new_xid())
        phase("funds.credit", "confirm", fund_payload("merchant", merchant_id, 1), xid)

    def worker(n: int):
        owners = [
            ("merchant", 43),
            ("merchant", 42),
            ("payer", 100 + n),
        ]  # payer: created by the batch
        owners = owners if n % 2 else owners[::-1]

        def call() -> None:
            ops = [
                BranchOp(new_xid(), fund_payload(*owner, 10)) for _ in range(5) for owner in owners
            ]
            batch("funds.credit", "try", ops)
            batch("funds.credit", "confirm", ops)

        return call

    run_at_once(*[worker(n) for n in range(6)], timeout=120)

    for merchant_id in (42, 43):
        merchant = account("merchant", merchant_id)
        assert (merchant.balance, merchant.pending_in) == (1 + 6 * 5 * 10, 0)
        assert posted_sum(merchant) == merchant.balance
    assert [account("payer", 100 + n).balance for n in range(6)] == [50] * 6
    assert FundEntry.objects.using("funds").filter(kind="posted").count() == 2 + 6 * 15
    assert fund_account_mismatches() == []


def test_concurrent_resubmissions_of_one_manual_credit_credit_once(payer):
    from accounts.services import wallet_credit

    def submit():
        return wallet_credit(
            payer_id=payer.pk,
            amount=500,
            reason="goodwill",
            credited_by="test",
            request_key="form-1",
        ).pk

    entry_ids = run_at_once(*[submit for _ in range(6)], timeout=60)

    assert len(set(entry_ids)) == 1
    assert account("payer", payer.pk).balance == 500
    assert fund_account_mismatches() == []
