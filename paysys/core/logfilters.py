"""Logs a human reads: routine lines go to DEBUG.

Beat sends ``orders.poll_bank`` every second and the recovery passes every few seconds; each
send, receipt and success was an INFO line (three a second). And the bank simulator's 404 ("no
payment for this order yet") answers every poll of an unpaid order, each logged by Django as a
WARNING. These become DEBUG records: shown with ``LOG_LEVEL=DEBUG``, hidden otherwise. Failures
of the same tasks (ERROR, WARNING) are untouched.
"""

from __future__ import annotations

import logging

# loggers whose INFO lines are about one task: beat's "Sending due task", the worker's
# "Task ... received", the tracer's "Task ... succeeded"
TASK_LOGGERS = {"celery.beat", "celery.worker.strategy", "celery.app.trace"}


def routine_tasks() -> set[str]:
    """Tasks beat runs on a short period (from the schedule), and the relay they kick."""
    from django.conf import settings

    return {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} | {"messaging.relay"}


class RoutineToDebug(logging.Filter):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self._routine: set[str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._is_routine(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True

    def _is_routine(self, record: logging.LogRecord) -> bool:
        if record.name == "django.request" and getattr(record, "status_code", None) == 404:
            return record.levelno <= logging.WARNING
        if record.levelno != logging.INFO or record.name not in TASK_LOGGERS:
            return False
        if self._routine is None:
            self._routine = routine_tasks()
        message = record.getMessage()
        return any(name in message for name in self._routine)
