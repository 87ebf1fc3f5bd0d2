"""Settings that must agree are system checks: manage.py commands stop on them, and Celery
workers and beat refuse to start (paysys/celery.py)."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from paysys.core.checks import check_settings, refuse_on_errors


def test_the_default_settings_pass():
    assert check_settings() == []


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("NOTIFY_CLAIM_LEASE", 1, "paysys.E001"),
        ("RETENTION_DAYS", 0, "paysys.E002"),
        ("ORDER_POLL_MAX_PER_SECOND", 0, "paysys.E003"),
    ],
)
def test_a_setting_out_of_bounds_stops_commands_and_workers(settings, name, value, error):
    setattr(settings, name, value)

    assert [e.id for e in check_settings()] == [error]
    with pytest.raises(SystemCheckError, match=error):
        call_command("check")
    with pytest.raises(SystemExit, match=error):
        refuse_on_errors()
