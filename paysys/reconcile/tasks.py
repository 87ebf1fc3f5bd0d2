import logging

from celery import shared_task

from paysys.reconcile.services import reconcile_and_record

logger = logging.getLogger(__name__)

# a run reads every table once: minutes on a large database, far over the default task limits
RECONCILE_TIME_LIMIT = 3 * 3600


@shared_task(
    name="paysys.reconcile",
    soft_time_limit=RECONCILE_TIME_LIMIT,
    time_limit=RECONCILE_TIME_LIMIT + 60,
)
def reconcile() -> dict:
    """beat, daily, on the maintenance queue: the same run as ``manage.py reconcile``, kept for admin."""
    report, record = reconcile_and_record(triggered_by="beat")
    log = logger.info if report.consistent else logger.error
    log(
        "reconcile %s: %s",
        "consistent" if report.consistent else f"INCONSISTENT ({report.inconsistencies} problems)",
        ", ".join(f"{n} {what}" for what, n in report.checked.items()),
    )
    return {
        "report": record.pk,
        "consistent": report.consistent,
        "inconsistencies": report.inconsistencies,
    }
