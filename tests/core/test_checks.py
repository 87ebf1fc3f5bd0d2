"""Settings that must agree, or have a shape, are system checks: manage.py commands stop on them,
and Celery workers and beat (paysys/celery.py) and the WSGI and ASGI applications refuse to start
(tests/core/test_security_settings.py starts those with a bad setting)."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from paysys.core.checks import check_settings, refuse_on_errors


def test_the_default_settings_pass():
    assert check_settings() == []


BAD = [
    ("NOTIFY_CLAIM_LEASE", 1, "paysys.E001", "set NOTIFY_CLAIM_LEASE above NOTIFY_TOTAL_TIMEOUT"),
    ("RETENTION_DAYS", 0, "paysys.E002", "set RETENTION_DAYS=1 or more"),
    ("ORDER_POLL_MAX_PER_SECOND", 0, "paysys.E003", "set ORDER_POLL_MAX_PER_SECOND=1 or more"),
    ("RETENTION_TIME_SHARE", 0, "paysys.E006", "set RETENTION_TIME_SHARE=0.2"),
    ("RETENTION_TIME_SHARE", 1.5, "paysys.E006", "set RETENTION_TIME_SHARE=0.2"),
    ("BANK_PAY_URL", "", "paysys.E004", "set BANK_PAY_URL"),
    ("BANK_QUERY_URL", "", "paysys.E004", "BANK_QUERY_URL"),
    (
        "SECURE_PROXY_SSL_HEADER",
        ("HTTP_X_FORWARDED_PROTO",),
        "paysys.E005",
        "set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https",
    ),
]
GOOD = [
    ("NOTIFY_CLAIM_LEASE", 16),
    ("RETENTION_DAYS", 1),
    ("ORDER_POLL_MAX_PER_SECOND", 1),
    ("RETENTION_TIME_SHARE", 1),
    ("BANK_PAY_URL", "https://bank.example.com/pay/"),
    ("BANK_QUERY_URL", "https://bank.example.com/payments/"),
    ("SECURE_PROXY_SSL_HEADER", ("HTTP_X_FORWARDED_PROTO", "https")),
    ("SECURE_PROXY_SSL_HEADER", None),
]


@pytest.mark.parametrize("name, value", GOOD)
def test_a_good_value_passes(settings, name, value):
    setattr(settings, name, value)

    assert check_settings() == []


@pytest.mark.parametrize("name, value, error, hint", BAD)
def test_a_bad_value_says_what_to_set(settings, name, value, error, hint):
    setattr(settings, name, value)

    [found] = check_settings()

    assert found.id == error and hint in found.hint


@pytest.mark.parametrize(
    "name, value, error", [(name, value, error) for name, value, error, _ in BAD]
)
def test_a_setting_out_of_bounds_stops_commands_and_workers(settings, name, value, error):
    setattr(settings, name, value)

    assert [e.id for e in check_settings()] == [error]
    with pytest.raises(SystemCheckError, match=error):
        call_command("check")
    with pytest.raises(SystemExit, match=error):
        refuse_on_errors()
