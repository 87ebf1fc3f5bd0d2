"""Logs a human reads: routine lines go to DEBUG.

Celery logs every task's receipt and success at INFO ("Task messaging.consume[…] succeeded in
0.01s: {'acked': [5], 'failed': []}"), and beat every send of a task it runs each second: lines
about the machinery, many a second, hiding the business steps (``order … paid``, ``voucher
booked for …``: one INFO line each). The bank simulator's 404 ("no payment for this order yet")
answers every poll of an unpaid order, and the simulators' deliberate error answers (a merchant
told to fail with 503) are logged by Django as WARNING and ERROR. These become DEBUG records:
shown with ``LOG_LEVEL=DEBUG``, hidden otherwise. Failures of tasks (ERROR, WARNING), the
platform's own 4xx / 5xx other than 404, and any error with a traceback are untouched.
"""

from __future__ import annotations

import logging
import time

# loggers whose INFO lines are about one task: beat's "Sending due task", the worker's
# "Task ... received", the tracer's "Task ... succeeded"
TASK_LOGGERS = {"celery.beat", "celery.worker.strategy", "celery.app.trace"}
# an outside party's pages (the simulators): their error answers are what they were asked to give
SANDBOX_PATH = "/sandbox/"


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
        if record.name == "django.request":
            if getattr(record, "status_code", None) == 404:
                return record.levelno <= logging.WARNING
            path = getattr(getattr(record, "request", None), "path", "")
            return path.startswith(SANDBOX_PATH) and not record.exc_info
        if record.levelno != logging.INFO or record.name not in TASK_LOGGERS:
            return False
        if record.name != "celery.beat":
            return (
                True  # a task's receipt or success, whichever task: its business step logs itself
            )
        if self._routine is None:
            self._routine = routine_tasks()
        message = record.getMessage()
        return any(name in message for name in self._routine)


class ClientErrorFlood(logging.Filter):
    """Django logs every 4xx answer as a WARNING line: a stranger sending 500 bad API keys a
    second writes 500 lines a second (about 2 MB a minute). Per process, at most
    ``PER_SECOND`` of them are written each second; the next one written says how many were
    dropped meanwhile. 5xx answers and records with a traceback always pass."""

    PER_SECOND = 20

    def __init__(self, name: str = ""):
        super().__init__(name)
        self._second, self._written, self._dropped = 0, 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if record.name != "django.request" or record.exc_info or not status or status >= 500:
            return True
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._written = second, 0
        if self._written >= self.PER_SECOND:
            self._dropped += 1
            return False
        self._written += 1
        if self._dropped:
            record.msg = f"{record.msg} (and {self._dropped} more 4xx lines dropped before it)"
            self._dropped = 0
        return True
