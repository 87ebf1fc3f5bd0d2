"""Settings that must agree with each other, or have a shape, as system checks (tag
``settings``). Each Error names the variable to set and how (its hint).

An Error stops every ``manage.py`` command (``check``, ``migrate``, ``runserver``, ``serve``...).
Django runs no checks under a WSGI or ASGI server or in Celery, so the WSGI and ASGI applications
(paysys/wsgi.py, paysys/asgi.py) and Celery workers and beat (paysys/celery.py) run these at
start-up and refuse to start on an Error: ``refuse_on_errors``. No process serves on them.

The refusals that keep secrets and the bank simulator out of production stay in the settings
(paysys/settings/security.py, payments.py, deployment.py): they must hold for every process that
loads settings, ``manage.py shell`` and scripts included, which run no checks.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

TAG = "settings"


@register(TAG)
def check_settings(app_configs=None, **kwargs) -> list[Error]:
    errors = []
    if settings.NOTIFY_CLAIM_LEASE <= settings.NOTIFY_TOTAL_TIMEOUT:
        errors.append(
            Error(
                "NOTIFY_CLAIM_LEASE must exceed NOTIFY_TOTAL_TIMEOUT: a record still being sent would "
                "be claimed again",
                hint=(
                    f"set NOTIFY_CLAIM_LEASE above NOTIFY_TOTAL_TIMEOUT ({settings.NOTIFY_TOTAL_TIMEOUT:g} "
                    "seconds), e.g. NOTIFY_CLAIM_LEASE=60 (the default)"
                ),
                id="paysys.E001",
            )
        )
    if settings.RETENTION_DAYS < 1:
        errors.append(
            Error(
                "RETENTION_DAYS must be at least 1: a message copy may still be on its way",
                hint="set RETENTION_DAYS=1 or more (the default is 30)",
                id="paysys.E002",
            )
        )
    if not 0 < settings.RETENTION_TIME_SHARE <= 1:
        errors.append(
            Error(
                "RETENTION_TIME_SHARE is the share of one connection's time retention may take: "
                "above 0, at most 1",
                hint="set RETENTION_TIME_SHARE=0.2 (the default) or another value in (0, 1]",
                id="paysys.E006",
            )
        )
    if settings.ORDER_POLL_MAX_PER_SECOND < 1:
        errors.append(
            Error(
                "ORDER_POLL_MAX_PER_SECOND must be at least 1 (questions per second to the bank)",
                hint="set ORDER_POLL_MAX_PER_SECOND=1 or more (the default is 50)",
                id="paysys.E003",
            )
        )
    if not settings.BANK_PAY_URL or not settings.BANK_QUERY_URL:
        errors.append(
            Error(
                "the sandbox is off, so the bank is a real one: BANK_PAY_URL and BANK_QUERY_URL are "
                "its addresses",
                hint=(
                    "set BANK_PAY_URL (payers are sent to BANK_PAY_URL<token>) and BANK_QUERY_URL "
                    "(order polling asks BANK_QUERY_URL<out_trade_no>)"
                ),
                id="paysys.E004",
            )
        )
    if settings.SECURE_PROXY_SSL_HEADER is not None and len(settings.SECURE_PROXY_SSL_HEADER) != 2:
        errors.append(
            Error(
                "SECURE_PROXY_SSL_HEADER is 'HEADER,value': two values",
                hint=(
                    "set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https behind a proxy that sets "
                    "that header (and strips it from clients), or unset it"
                ),
                id="paysys.E005",
            )
        )
    return errors


def refuse_on_errors() -> None:
    """For processes that run no management command (Celery workers and beat, a WSGI or ASGI
    server): exit on an Error (SystemExit: Celery's signal dispatch logs and swallows an
    Exception)."""
    from django.core.checks import run_checks

    errors = [error for error in run_checks(tags=[TAG]) if error.is_serious()]
    if errors:
        raise SystemExit("refusing to start:\n" + "\n".join(str(error) for error in errors))
