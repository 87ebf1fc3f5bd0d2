"""Every reconcile run is kept (command and beat's daily task), shown read-only in admin; the
command can show its progress."""

from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from accounting.models import Voucher
from paysys.reconcile.models import ReconcileReport
from paysys.reconcile.selectors import latest_report
from tests.reconcile.helpers import reconcile

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def test_each_run_of_the_command_is_kept_with_its_verdict_counts_and_problem_lines(paid):
    assert reconcile()[0] == 0
    Voucher.objects.create(source="wallet.credited:planted", currency="CNY")
    assert reconcile()[0] == 1

    first, second = ReconcileReport.objects.order_by("pk")
    assert (
        first.ok
        and first.settled
        and first.inconsistencies == 0
        and first.triggered_by == "command"
    )
    assert first.summary["checked"]["paid orders"] == 2 and first.finished_at >= first.started_at
    assert not second.ok and second.inconsistencies == 1 and latest_report() == second
    assert second.summary["problems"]["unbalanced voucher"]["examples"] == [
        "wallet.credited:planted: no lines"
    ]


def test_beat_runs_it_daily_on_the_maintenance_queue_and_keeps_the_report(paid):
    from paysys.celery import app
    from paysys.reconcile.tasks import reconcile as task

    assert settings.CELERY_BEAT_SCHEDULE["paysys.reconcile"] == {
        "task": "paysys.reconcile",
        "schedule": 86400.0,
    }
    assert app.amqp.router.route({}, "paysys.reconcile")["queue"].name == "maintenance"

    result = task()

    report = latest_report()
    assert (
        result == {"report": report.pk, "consistent": True, "inconsistencies": 0}
        and report.triggered_by == "beat"
    )


def test_admin_lists_the_reports_newest_first_read_only_with_the_problem_lines(paid):
    Voucher.objects.create(source="wallet.credited:planted", currency="CNY")
    reconcile()
    report = latest_report()
    user = get_user_model().objects.create_user(
        "rec-staff", password="pw-rec-1", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)

    listing = client.get(reverse("admin:reconcile_reconcilereport_changelist"))
    detail = client.get(reverse("admin:reconcile_reconcilereport_change", args=[report.pk]))

    assert listing.status_code == 200 and b"INCONSISTENT" in listing.content
    assert detail.status_code == 200 and b"wallet.credited:planted: no lines" in detail.content
    assert b'name="_save"' not in detail.content  # read-only
    assert client.get(reverse("admin:reconcile_reconcilereport_add")).status_code == 403


def test_progress_shows_a_bar_per_table_on_stderr(paid):
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit):
        call_command("reconcile", "--progress", stdout=out, stderr=err)

    assert (
        "paid orders" in err.getvalue()
        and "1/1 ranges" in err.getvalue()
        and "vouchers" in err.getvalue()
    )
    assert "ranges" not in out.getvalue()
