"""paysys.reconcile.selectors: the newest report, for the admin overview."""

from datetime import timedelta

import pytest
from django.utils import timezone

from paysys.reconcile.models import ReconcileReport
from paysys.reconcile.selectors import latest_report

pytestmark = pytest.mark.django_db(databases="__all__")


def test_latest_report_is_none_before_the_first_run():
    assert latest_report() is None


def test_latest_report_is_the_newest_run():
    now = timezone.now()
    for hours_ago, ok in ((48, True), (1, False), (24, True)):
        started = now - timedelta(hours=hours_ago)
        ReconcileReport.objects.create(
            started_at=started,
            finished_at=started + timedelta(seconds=3),
            ok=ok,
            inconsistencies=0 if ok else 2,
            summary={"consistent": ok},
        )

    report = latest_report()

    assert (
        report.started_at == now - timedelta(hours=1)
        and not report.ok
        and report.inconsistencies == 2
    )
