"""Settings that must agree with each other, as system checks (tag ``settings``): an Error stops
``manage.py check``, ``migrate``, ``runserver`` and ``serve``, and Celery workers and beat run
these at start-up too (paysys/celery.py), so no process starts on them.

The refusals that keep secrets and the bank simulator out of production stay in settings.py:
they must hold for every process that loads settings, ``manage.py shell`` and scripts included,
which run no checks."""

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
                id="paysys.E001",
            )
        )
    if settings.RETENTION_DAYS < 1:
        errors.append(
            Error(
                "RETENTION_DAYS must be at least 1: a message copy may still be on its way",
                id="paysys.E002",
            )
        )
    if settings.ORDER_POLL_MAX_PER_SECOND < 1:
        errors.append(
            Error(
                "ORDER_POLL_MAX_PER_SECOND must be at least 1 (questions per second to the bank)",
                id="paysys.E003",
            )
        )
    return errors


def refuse_on_errors() -> None:
    """For processes that run no management command (Celery workers, beat): exit on an Error
    (SystemExit: Celery's signal dispatch logs and swallows an Exception)."""
    from django.core.checks import run_checks

    errors = [error for error in run_checks(tags=[TAG]) if error.is_serious()]
    if errors:
        raise SystemExit("refusing to start:\n" + "\n".join(str(error) for error in errors))
