"""Reliable messages (paysys/messaging): resends, check-backs, the relay, the HTTP API's token."""

from __future__ import annotations

from paysys.settings.environment import (
    env_bool,
    env_float,
    env_int,
    env_int_list,
    env_list,
    env_secret,
)

# when each send happens: the 1st at once (0), the next ones 60, 120, 300 and 900 s after the
# previous send; a message still not consumed 900 s after its 5th send goes DEAD (admin resends)
MESSAGE_RESEND_SCHEDULE = env_int_list("MESSAGE_RESEND_SCHEDULE", "0,60,120,300,900")
# a PREPARED message this old is checked
MESSAGE_CHECK_BACK_DELAY = env_int("MESSAGE_CHECK_BACK_DELAY", 60)
MESSAGE_CHECK_BACK_INTERVAL = env_int("MESSAGE_CHECK_BACK_INTERVAL", 60)
MESSAGE_CHECK_BACK_MAX = env_int("MESSAGE_CHECK_BACK_MAX", 15)  # undecided this often -> DEAD
# one deadline for a whole check-back over HTTP (resolve, connect, send, answer): a producer
# answering a byte at a time is undecided after this, and asked again next interval
MESSAGE_CHECK_BACK_TIMEOUT = env_float("MESSAGE_CHECK_BACK_TIMEOUT", 5)
# after a commit, the producing process runs the relay pass itself, on its kicker thread (off:
# it sends a relay task to its service's worker, one more hop). Either way a pass is paced.
MESSAGE_RELAY_INLINE = env_bool("MESSAGE_RELAY_INLINE", True)
# a paced relay pass ships one batch per queue while none is in flight (paysys/messaging/relay.py);
# a worker that dies mid-batch holds its queue at most this long
MESSAGE_BATCH_IN_FLIGHT_TTL = env_int("MESSAGE_BATCH_IN_FLIGHT_TTL", 30)
# the two-phase HTTP API (/api/v1/messages) is off until a token is set, and open only to the
# topics listed: an outside producer must never be able to announce e.g. a bank payment
MESSAGING_SERVICE_TOKEN = env_secret("MESSAGING_SERVICE_TOKEN", required=False)
MESSAGING_HTTP_TOPICS = env_list("MESSAGING_HTTP_TOPICS", "")
