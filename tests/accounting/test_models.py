import importlib
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.migrations.loader import MigrationLoader

from accounting.models import CHART_OF_ACCOUNTS, Account, Voucher, VoucherLine
from accounting.services import chart_of_accounts_seed

pytestmark = pytest.mark.django_db(databases="__all__")

CHART = {
    "1002": ("asset", "debit"),
    "2202": ("liability", "credit"),
    "2241": ("liability", "credit"),
    "2242": ("liability", "credit"),
    "6001": ("revenue", "credit"),
}


def run_chart_migration(alias: str) -> None:
    """Run migration 0002's RunPython on ``alias`` with the historical models, as migrate does."""
    state = MigrationLoader(None, ignore_no_migrations=True).project_state(
        ("accounting", "0001_initial")
    )
    seed_chart = importlib.import_module(
        "accounting.migrations.0002_seed_chart_of_accounts"
    ).seed_chart
    seed_chart(state.apps, SimpleNamespace(connection=connections[alias]))


def test_chart_migration_seeds_the_accounting_alias():
    Account.objects.using("accounting").all().delete()

    run_chart_migration("accounting")

    accounts = Account.objects.using("accounting").all()
    assert {a.code: (a.kind, a.normal_side) for a in accounts} == CHART
    assert all(a.name for a in accounts)


@pytest.mark.parametrize("alias", sorted(set(settings.DATABASES) - {"accounting"}))
def test_chart_migration_skips_every_other_alias(alias):
    run_chart_migration(alias)  # would fail on the missing table if it tried to write

    assert Account._meta.db_table not in connections[alias].introspection.table_names()


def test_migration_chart_matches_the_code_chart():
    seeded = list(
        Account.objects.using("accounting")
        .order_by("code")
        .values_list("code", "name", "kind", "normal_side")
    )

    assert seeded == sorted(CHART_OF_ACCOUNTS)
    assert chart_of_accounts_seed() == 0  # nothing missing: nothing created


def test_chart_seed_restores_missing_accounts_and_keeps_edited_ones():
    missing = [code for code, *_ in CHART_OF_ACCOUNTS[:2]]  # not the last: the count is a sum
    Account.objects.using("accounting").filter(code__in=missing).delete()
    kept = CHART_OF_ACCOUNTS[-1][0]
    Account.objects.using("accounting").filter(code=kept).update(name="renamed by an accountant")

    assert chart_of_accounts_seed() == 2
    assert Account.objects.using("accounting").get(code=kept).name == "renamed by an accountant"
    assert Account.objects.using("accounting").filter(code__in=missing).count() == 2


def test_chart_seed_is_all_or_nothing(monkeypatch):
    Account.objects.using("accounting").all().delete()
    real_get_or_create = Account.objects.get_queryset().__class__.get_or_create
    calls = []

    def failing_on_the_third(self, **kwargs):
        calls.append(kwargs["code"])
        if len(calls) == 3:
            raise DatabaseError("connection lost")
        return real_get_or_create(self, **kwargs)

    monkeypatch.setattr(
        Account.objects.get_queryset().__class__, "get_or_create", failing_on_the_third
    )
    with pytest.raises(DatabaseError):
        chart_of_accounts_seed()

    assert not Account.objects.using("accounting").exists()


@pytest.fixture
def voucher():
    return Voucher.objects.using("accounting").create(source="test:constraints", currency="CNY")


@pytest.mark.parametrize(
    "debit,credit",
    [(5, 5), (-5, 0), (0, -5), (-5, 10), (0, 0)],
    ids=["both-sides", "negative-debit", "negative-credit", "negative-and-positive", "both-zero"],
)
def test_database_refuses_a_line_that_is_not_one_positive_side(voucher, debit, credit):
    account = Account.objects.using("accounting").get(code="1002")

    with pytest.raises(IntegrityError), transaction.atomic(using="accounting"):
        VoucherLine.objects.using("accounting").create(
            voucher=voucher, account=account, debit=debit, credit=credit
        )

    assert not VoucherLine.objects.using("accounting").exists()


@pytest.mark.parametrize("debit,credit", [(5, 0), (0, 5)])
def test_database_accepts_a_one_sided_positive_line(voucher, debit, credit):
    account = Account.objects.using("accounting").get(code="1002")

    VoucherLine.objects.using("accounting").create(
        voucher=voucher, account=account, debit=debit, credit=credit
    )

    assert VoucherLine.objects.using("accounting").count() == 1


def test_source_is_unique(voucher):
    with pytest.raises(IntegrityError), transaction.atomic(using="accounting"):
        Voucher.objects.using("accounting").create(source=voucher.source, currency="CNY")


def test_an_account_with_lines_cannot_be_deleted(voucher):
    from django.db.models import ProtectedError

    account = Account.objects.using("accounting").get(code="6001")
    VoucherLine.objects.using("accounting").create(voucher=voucher, account=account, credit=1)

    with pytest.raises(ProtectedError):
        account.delete()
