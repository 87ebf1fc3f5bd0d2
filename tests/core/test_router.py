import pytest
from django.apps import apps
from django.conf import settings
from django.db import connections

from paysys.routers import alias_for

pytestmark = pytest.mark.django_db(databases="__all__")

EXPECTED_HOME = {
    "core": "default",
    "gateway": "default",
    "auth": "default",
    "admin": "default",
    "django_celery_beat": "default",
    "orders": "orders",
    "sandbox": "sandbox",
    "accounting": "accounting",
    "notifications": "notifications",
}


def own_models():
    # shared models (outbox, inbox, TCC barrier: alias None) have a table in every alias
    return [
        m
        for m in apps.get_models()
        if m._meta.managed and alias_for(m._meta.app_label, m._meta.model_name) is not None
    ]


def test_every_alias_is_a_service():
    assert set(settings.DATABASES) == {
        "default",
        "orders",
        "funds",
        "points",
        "accounting",
        "notifications",
        "sandbox",
    }


@pytest.mark.parametrize("app_label,alias", sorted(EXPECTED_HOME.items()))
def test_app_reads_and_writes_in_its_alias(app_label, alias):
    for model in apps.get_app_config(app_label).get_models():
        assert alias_for(app_label, model._meta.model_name) == alias


def test_each_table_exists_only_in_its_own_alias():
    tables = {
        alias: set(connections[alias].introspection.table_names()) for alias in settings.DATABASES
    }

    for model in own_models():
        home = alias_for(model._meta.app_label, model._meta.model_name)
        where = {alias for alias, names in tables.items() if model._meta.db_table in names}
        assert where == {home}, f"{model._meta.label} is in {sorted(where)}, expected only {home}"


def test_accounts_models_must_declare_their_side():
    assert alias_for("accounts", "FundAccount") == "funds"
    assert alias_for("accounts", "PointsEntry") == "points"
    with pytest.raises(LookupError):
        alias_for("accounts", "Wallet")


def test_no_relation_across_aliases(merchant):
    from orders.models import Order
    from paysys.routers import ServiceRouter

    order = Order(merchant_id=merchant.pk)
    order._state.db = "orders"

    assert ServiceRouter().allow_relation(merchant, order) is False
