"""paysys's own fixed values: timings, sizes and batches tuned in code, never read from the
environment. The knobs (environment variables) are in the modules beside this one, by concern."""

# --- web ------------------------------------------------------------------------------------

# Refuse oversized request bodies before they are parsed (a notify or an order is < 4 KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200
# a worker (or beat) whose last heartbeat is this many WORKER_HEARTBEAT_SECONDS old is reported
# dead by /healthz and the admin overview (paysys/core/heartbeats.py)
WORKER_DEAD_AFTER_BEATS = 3

# --- the bank simulator ----------------------------------------------------------------------

# the bank's own resend schedule for unacknowledged notifies (seconds after the payment)
BANK_NOTIFY_SCHEDULE = [0, 2, 5, 15, 30, 60, 120, 300, 600, 1800]

# --- reliable messages (paysys/messaging) ----------------------------------------------------

MESSAGE_CHECK_BACK_BUDGET = 20  # seconds one check-back pass may spend asking producers
MESSAGE_BROKER_RETRY_SECONDS = 5  # a message the broker refused is tried again this soon
MESSAGE_KICK_TTL = 5  # seconds a pending relay kick suppresses further kicks

# --- merchant notifications (notifications/) -------------------------------------------------

NOTIFY_POLL_INTERVAL = 0.1  # seconds between due scans while a pass has requests in flight
NOTIFY_LINGER_SECONDS = 2.0  # a pass with nothing in flight waits for records due this soon
# after an attempt finishes, wait this long for more before the next turn
NOTIFY_COLLECT_SECONDS = 0.03
NOTIFY_KICK_TTL = 1  # seconds a pending delivery kick suppresses further kicks

# --- TCC (paysys/tcc) ------------------------------------------------------------------------

TCC_DECISION_GRACE = 5  # seconds past the tries' timeouts before recovery cancels a TRYING one
TCC_TRY_THREADS = 8  # per process and participant alias: its try threads, each with one connection
TCC_PHASE_TWO_BATCH = 200  # branch ops per phase-two task
TCC_KICK_TTL = 5  # seconds a pending phase-two kick suppresses further kicks of its queue

# --- retention (paysys/core/retention.py) ----------------------------------------------------

# one beat pass stops after this (under the task time limit); the next goes on
RETENTION_PASS_SECONDS = 45
