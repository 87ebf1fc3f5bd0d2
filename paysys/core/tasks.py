import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from paysys.core import retention

logger = logging.getLogger(__name__)


@shared_task(name="paysys.purge_history")
def purge_history() -> dict[str, int]:
    """One retention pass (beat, every minute, on the maintenance queue): at most
    RETENTION_PASS_SECONDS of deleting; the next pass goes on where this one stopped."""
    result = retention.purge_history(
        older_than=timedelta(days=settings.RETENTION_DAYS),
        budget_seconds=settings.RETENTION_PASS_SECONDS,
    )
    if any(result.counts.values()) or not result.complete:
        logger.info(
            "retention deleted %s%s",
            ", ".join(f"{label}: {n}" for label, n in result.counts.items() if n),
            "" if result.complete else " (more next pass)",
        )
    return result.counts
