from django.apps import AppConfig


class ReconcileConfig(AppConfig):
    """``manage.py reconcile``: reads every service's database to check the invariants between
    them, as an auditor from outside would; no service imports it."""

    name = "paysys.reconcile"
    label = "reconcile"
