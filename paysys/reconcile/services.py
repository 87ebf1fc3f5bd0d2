"""A reconcile run, kept: what ``manage.py reconcile`` and beat's daily task both do."""

from __future__ import annotations

from django.utils import timezone

from paysys.reconcile.checks import Progress, Report, reconcile
from paysys.reconcile.models import ReconcileReport


def reconcile_and_record(
    *,
    grace: float = 60.0,
    triggered_by: str,
    progress: Progress | None = None,
) -> tuple[Report, ReconcileReport]:
    """Run the checks and save their report (in ``default``) for admin; a service database that
    does not answer raises DatabaseError and saves nothing (nothing was reconciled)."""
    started_at = timezone.now()
    report = reconcile(grace=grace, progress=progress)
    record = ReconcileReport.objects.create(
        started_at=started_at,
        finished_at=timezone.now(),
        ok=report.consistent,
        settled=report.settled,
        inconsistencies=report.inconsistencies,
        summary=report.as_dict(),
        triggered_by=triggered_by,
    )
    return report, record
