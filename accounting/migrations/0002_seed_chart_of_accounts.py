"""Seed the chart of accounts, in the accounting database only.

The chart is written out here rather than imported, so this migration keeps meaning what it
meant when it ran, whatever later code says.
"""

from django.db import migrations, router

CHART = [
    # code, name, kind, normal side
    ("1002", "Bank clearing (money received at the bank)", "asset", "debit"),
    ("2202", "Merchant payable (owed to merchants)", "liability", "credit"),
    ("2241", "Payer wallets (balances held for payers)", "liability", "credit"),
    ("2242", "Payer points (points owed to payers)", "liability", "credit"),
    ("6001", "Fee income (platform fees)", "revenue", "credit"),
]


def seed_chart(apps, schema_editor):
    alias = schema_editor.connection.alias
    Account = apps.get_model("accounting", "Account")
    if not router.allow_migrate_model(alias, Account):
        return
    for code, name, kind, normal_side in CHART:
        Account.objects.using(alias).update_or_create(
            code=code, defaults={"name": name, "kind": kind, "normal_side": normal_side}
        )


def unseed_chart(apps, schema_editor):
    alias = schema_editor.connection.alias
    Account = apps.get_model("accounting", "Account")
    if not router.allow_migrate_model(alias, Account):
        return
    # PROTECT refuses this once anything is booked: a ledger in use is not unseeded
    Account.objects.using(alias).filter(code__in=[row[0] for row in CHART]).delete()


class Migration(migrations.Migration):
    dependencies = [("accounting", "0001_initial")]

    operations = [migrations.RunPython(seed_chart, unseed_chart, hints={"model_name": "account"})]
