"""Reads of the reconcile reports (the admin overview shows the latest)."""

from __future__ import annotations

from paysys.reconcile.models import ReconcileReport


def latest_report() -> ReconcileReport | None:
    """The newest report, or None before the first run."""
    return ReconcileReport.objects.order_by("-started_at", "-pk").first()
