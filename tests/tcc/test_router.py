"""Where TCC's tables live: the coordinator's only in default, the barrier in every alias."""

import pytest
from django.conf import settings
from django.db import connections

from paysys.tcc.models import Barrier, GlobalTransaction, TransactionBranch

pytestmark = pytest.mark.django_db(databases="__all__")


def aliases_with(model) -> set[str]:
    return {
        alias
        for alias in settings.DATABASES
        if model._meta.db_table in connections[alias].introspection.table_names()
    }


def test_coordinator_tables_only_in_default():
    assert aliases_with(GlobalTransaction) == {"default"}
    assert aliases_with(TransactionBranch) == {"default"}


def test_the_barrier_table_in_every_alias():
    assert aliases_with(Barrier) == set(settings.DATABASES)
