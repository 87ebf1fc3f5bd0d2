"""Keep django-celery-beat's periodic tasks equal to ``settings.CELERY_BEAT_SCHEDULE``.

Schedules are defined in code; the database copy is what beat reads and what admin shows.
Every entry paysys owns is named after its key; entries that left the code are deleted.
"""

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django_celery_beat.schedulers import DatabaseScheduler


def sync_beat_schedules() -> list[str]:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    wanted = settings.CELERY_BEAT_SCHEDULE
    for name, entry in wanted.items():
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=int(entry["schedule"]), period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": entry["task"],
                "interval": interval,
                "enabled": True,
                # a pass still queued when the next one is due is dropped, so slow passes never pile up
                "expire_seconds": max(int(entry["schedule"]), 1),
                "description": "paysys: defined in settings.CELERY_BEAT_SCHEDULE",
            },
        )
    stale = PeriodicTask.objects.filter(description__startswith="paysys:").exclude(name__in=wanted)
    removed = list(stale.values_list("name", flat=True))
    stale.delete()
    return removed


class Scheduler(DatabaseScheduler):
    """django-celery-beat's scheduler, syncing the code-defined schedules when beat starts."""

    def setup_schedule(self):
        sync_beat_schedules()
        super().setup_schedule()


def sync_after_migrate(sender, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    if using == DEFAULT_DB_ALIAS:
        sync_beat_schedules()
