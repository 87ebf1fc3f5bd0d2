"""Merchant notifications (notifications/): retries, timeouts, concurrency, secret rotation."""

from __future__ import annotations

from paysys.settings.environment import env_float, env_int, env_int_list

# waits in seconds after attempt 1, 2, ... (the first attempt is immediate): 15 s, 1 min, 5 min,
# 30 min, 2 h, 6 h, 12 h, 24 h -> 9 attempts over ~45 h; then FAILED, waiting for a human.
# A merchant may have its own (notifications.MerchantSchedule).
NOTIFY_RETRY_SCHEDULE = env_int_list(
    "NOTIFY_RETRY_SCHEDULE", "15,60,300,1800,7200,21600,43200,86400"
)
NOTIFY_RETRY_JITTER = env_float("NOTIFY_RETRY_JITTER", 0.2)  # +-20 % on every wait
NOTIFY_CONNECT_TIMEOUT = env_float("NOTIFY_CONNECT_TIMEOUT", 5)
NOTIFY_TOTAL_TIMEOUT = env_float("NOTIFY_TOTAL_TIMEOUT", 15)  # whole attempt, connect included
# requests in flight at once per delivery worker process, and per endpoint host (host:port: the
# URLs of one server share it) within it
NOTIFY_MAX_IN_FLIGHT = env_int("NOTIFY_MAX_IN_FLIGHT", 256)
NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT = env_int("NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT", 8)
# a claimed record is due again this long after its claim unless its attempt is recorded first:
# a worker killed mid-delivery loses nothing (must exceed NOTIFY_TOTAL_TIMEOUT: paysys.E001)
NOTIFY_CLAIM_LEASE = env_float("NOTIFY_CLAIM_LEASE", 60)
NOTIFY_PASS_SECONDS = env_float("NOTIFY_PASS_SECONDS", 20)  # a pass stops claiming after this
# after a webhook secret rotation the old secret keeps signing (next to the new one) this long
NOTIFY_SECRET_GRACE = env_int("NOTIFY_SECRET_GRACE", 24 * 3600)
