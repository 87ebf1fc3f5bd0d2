"""The database itself refuses a negative balance, reservation or available amount: code that
bypasses the services (a raw UPDATE, a bug) cannot break the invariant."""

import pytest
from django.db import IntegrityError, connections, transaction
from django.db.models import F

from accounts.models import FundAccount, FundEntry, PointsAccount, PointsEntry
from tests.accounts.helpers import fund_payload, new_xid, phase

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def wallet():
    xid = new_xid()
    phase("funds.credit", "try", fund_payload("payer", 1, 100), xid)
    phase("funds.credit", "confirm", fund_payload("payer", 1, 100), xid)
    phase("funds.debit", "try", fund_payload("payer", 1, 40), new_xid())
    return FundAccount.objects.using("funds").get(owner_type="payer", owner_id=1)


@pytest.mark.parametrize(
    "changes",
    [
        {"balance": -1},
        {"balance": F("balance") - 101},
        {"frozen": -1},
        {"pending_in": -1},
        {"balance": 39},  # below frozen (40): available would be -1
        {"frozen": F("frozen") + 61},  # frozen above balance
    ],
)
def test_orm_update_that_breaks_an_invariant_is_refused(wallet, changes):
    with pytest.raises(IntegrityError), transaction.atomic(using="funds"):
        FundAccount.objects.using("funds").filter(pk=wallet.pk).update(**changes)

    wallet.refresh_from_db(using="funds")
    assert (wallet.balance, wallet.frozen, wallet.available) == (100, 40, 60)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE {t} SET balance = balance - 1000 WHERE id = %s",
        "UPDATE {t} SET balance = frozen - 1 WHERE id = %s",
        "UPDATE {t} SET pending_in = -5 WHERE id = %s",
    ],
)
def test_raw_sql_that_breaks_an_invariant_is_refused(wallet, sql):
    connection = connections["funds"]
    with (
        pytest.raises(IntegrityError),
        transaction.atomic(using="funds"),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            sql.format(t=connection.ops.quote_name(FundAccount._meta.db_table)), [wallet.pk]
        )

    wallet.refresh_from_db(using="funds")
    assert wallet.balance == 100


def test_an_owner_has_one_account_per_currency(wallet):
    with pytest.raises(IntegrityError), transaction.atomic(using="funds"):
        FundAccount.objects.using("funds").create(owner_type="payer", owner_id=1, currency="CNY")

    FundAccount.objects.using("funds").create(
        owner_type="merchant", owner_id=1, currency="CNY"
    )  # other owner type


@pytest.mark.parametrize("amount,balance_after", [(0, 0), (-1, 0), (1, -1)])
def test_entries_are_positive_with_a_non_negative_balance_after(wallet, amount, balance_after):
    with pytest.raises(IntegrityError), transaction.atomic(using="funds"):
        FundEntry.objects.using("funds").create(
            account=wallet,
            kind="posted",
            direction="credit",
            amount=amount,
            balance_after=balance_after,
        )


def test_points_cannot_go_negative():
    account = PointsAccount.objects.using("points").create(payer_id=1)
    for changes in ({"balance": -1}, {"pending": -1}):
        with pytest.raises(IntegrityError), transaction.atomic(using="points"):
            PointsAccount.objects.using("points").filter(pk=account.pk).update(**changes)
    with pytest.raises(IntegrityError), transaction.atomic(using="points"):
        PointsEntry.objects.using("points").create(
            account=account, kind="posted", points=0, balance_after=0
        )


def test_accounts_live_in_their_own_databases():
    assert FundAccount.objects.db == "funds" and FundEntry.objects.db == "funds"
    assert PointsAccount.objects.db == "points" and PointsEntry.objects.db == "points"
