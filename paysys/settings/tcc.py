"""TCC (paysys/tcc): try timeout, phase-two resends, inline confirms, barrier retention."""

from __future__ import annotations

from paysys.settings.environment import env_bool, env_float, env_int, env_int_list

TCC_TRY_TIMEOUT = env_float("TCC_TRY_TIMEOUT", 2)  # seconds one try may take
# waits before recovery resends an unfinished phase two: after the decision, after the 1st
# resend, ...; due again after the last -> flagged for a human (about an hour by default)
TCC_RETRY_SCHEDULE = env_int_list("TCC_RETRY_SCHEDULE", "10,20,30,60,120,300,600,900,1800")
# confirms run at once in the process that decided, on its try threads (off: only the
# participants' workers run them, after a kick)
TCC_PHASE_TWO_INLINE = env_bool("TCC_PHASE_TWO_INLINE", True)
TCC_BARRIER_RETENTION_DAYS = env_int("TCC_BARRIER_RETENTION_DAYS", 7)  # then final ones' rows go
