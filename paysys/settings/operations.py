"""Operations: health reports, workers' heartbeats, retention of old history, logging."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from paysys.settings.environment import env_float, env_int

# /healthz asks every database at most once per this many seconds per web process (anyone may call it)
HEALTHZ_CACHE_SECONDS = env_float("HEALTHZ_CACHE_SECONDS", 2)
# every worker (and beat) records a heartbeat this often (paysys/core/heartbeats.py); one whose last
# is WORKER_DEAD_AFTER_BEATS beats old is reported dead by /healthz and the admin overview
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 10)

# --- retention (paysys/core/retention.py, manage.py purge_history) -------------------------

# consumed messages (outbox rows CONSUMED this long ago, with their inbox rows), notification
# attempts and processed bank-notify receipts older than this are deleted; at least 1 day
# (paysys.E002)
RETENTION_DAYS = env_int("RETENTION_DAYS", 30)
# keys per range: rows per DELETE at most
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 1000)
# the share of one database connection's time retention may take: after each DELETE it pauses
# so long that its batches fill at most this share (0.2: four times as long as the batch took),
# and at least RETENTION_PAUSE_SECONDS. A backlog goes slower, payments keep the database
RETENTION_TIME_SHARE = env_float("RETENTION_TIME_SHARE", 0.2)
RETENTION_PAUSE_SECONDS = env_float("RETENTION_PAUSE_SECONDS", 0.05)

# --- logging ----------------------------------------------------------------------------------

# the servers log what they do (INFO); a command run for its report (manage.py demo, scenario,
# reconcile, create_merchant, ...) prints what matters itself, and the services' INFO lines would
# only interleave with it: WARNING there. LOG_LEVEL, when set, decides for every process.
_SERVER_COMMANDS = {"serve", "runstack", "runserver"}


def _default_log_level(argv: list[str]) -> str:
    command = argv[1] if len(argv) > 1 and Path(argv[0]).name == "manage.py" else None
    return "WARNING" if command and command not in _SERVER_COMMANDS else "INFO"


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # routine lines (beat's one-second polls, the bank's "no payment yet" 404s) are DEBUG
    # and a flood of 4xx lines (a stranger's bad API keys) is cut to 20 a second per process
    "filters": {
        "routine_to_debug": {"()": "paysys.core.logfilters.RoutineToDebug"},
        "client_error_flood": {"()": "paysys.core.logfilters.ClientErrorFlood"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["routine_to_debug", "client_error_flood"],
        }
    },
    "root": {
        "handlers": ["console"],
        "level": os.environ.get("LOG_LEVEL") or _default_log_level(sys.argv),
    },
    "loggers": {
        # Django's own handlers (its DEFAULT_LOGGING: a console printing bare messages, without
        # the filter above, and mail to ADMINS, none here) go: django.* records reach the console
        # above alone, once, formatted, routine 404s ("Not Found: /sandbox/bank/payments/...")
        # at DEBUG; the level follows the root's (LOG_LEVEL)
        "django": {"handlers": [], "level": "NOTSET"},
        "django.db.backends": {"level": "WARNING"},
        # a request with a foreign Host header is answered 400; a traceback per request would let
        # anyone flood the log (and its alerts)
        "django.security.DisallowedHost": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}
