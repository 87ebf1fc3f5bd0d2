"""Payments: orders (currencies, expiry, polling the bank) and the bank, the platform's side of it
(gateway, pay links, polling) and, where enabled, the bank simulator's own secret and token."""

from __future__ import annotations

import hashlib
import hmac
import os

from paysys.settings.deployment import DEBUG, PUBLIC_BASE_URL, SANDBOX_ENABLED, dev_secrets_allowed
from paysys.settings.environment import env_int, env_int_list, env_list, env_secret

# --- orders ---------------------------------------------------------------------------------

ORDER_CURRENCIES = env_list("ORDER_CURRENCIES", "CNY")
ORDER_EXPIRY_SECONDS = env_int("ORDER_EXPIRY_SECONDS", 30 * 60)
# open (CREATED, unexpired) orders a merchant may have; beyond it creating one is a 429
ORDER_MAX_OPEN_PER_MERCHANT = env_int("ORDER_MAX_OPEN_PER_MERCHANT", 1000)
# order polling: a notify may be lost, so orders asks the bank itself; seconds between asks
# while no notify came, then every ORDER_POLL_LATE_INTERVAL until the order expires
ORDER_POLL_SCHEDULE = env_int_list("ORDER_POLL_SCHEDULE", "2,3,5,10,20,30")
ORDER_POLL_LATE_INTERVAL = env_int("ORDER_POLL_LATE_INTERVAL", 180)
# questions one polling pass asks the bank at a time (threads doing HTTP only)
ORDER_POLL_CONCURRENCY = env_int("ORDER_POLL_CONCURRENCY", 8)
# the most questions orders asks the bank in any one second, polling and expiry passes of every
# worker process together (paysys.core.ratelimit, counted in the shared cache): however many
# orders are due, the bank is never flooded; those not asked yet stay due, longest-due first
ORDER_POLL_MAX_PER_SECOND = env_int("ORDER_POLL_MAX_PER_SECOND", 50)
# an expired order is closed once the bank says it was not paid; if the bank cannot be asked,
# it is closed anyway this long after expiry (a payment arriving later is flagged for a human)
ORDER_CLOSE_GRACE_SECONDS = env_int("ORDER_CLOSE_GRACE_SECONDS", 600)

# --- the bank: the platform's side (gateway, pay links, polling) --------------------------

# the platform trusts notifies and query answers signed with this; the sandbox never reads it
BANK_SHARED_SECRET = env_secret(
    "BANK_SHARED_SECRET",
    dev_default="dev-bank-shared-secret-embedded-default-only" if dev_secrets_allowed else None,
)
# where payers pay and where polling asks: the bank's addresses, the simulator's only with the
# sandbox. With the sandbox off both must be set: a system check says so (paysys.E004).
_bank_url_default = f"{PUBLIC_BASE_URL}/sandbox/bank/" if SANDBOX_ENABLED else ""
BANK_PAY_URL = os.environ.get("BANK_PAY_URL", _bank_url_default and _bank_url_default + "pay/")
BANK_QUERY_URL = os.environ.get(
    "BANK_QUERY_URL", _bank_url_default and _bank_url_default + "payments/"
)

# --- the sandbox's own settings (the bank simulator is another party: its own secret, token) ----

if SANDBOX_ENABLED:
    # With DEBUG on the simulator is the dev stack's bank, so it signs with what the platform trusts.
    # With DEBUG off (SANDBOX_ALLOW_IN_PRODUCTION) both must be set explicitly: a staging platform
    # whose bank is the simulator, never a production secret copied over by default.
    SANDBOX_BANK_SECRET = (
        env_secret("SANDBOX_BANK_SECRET", required=not DEBUG) or BANK_SHARED_SECRET
    )
    # the sandbox's control endpoints (release held notifies, pay with test options)
    SANDBOX_TOKEN = (
        env_secret("SANDBOX_TOKEN", required=not DEBUG)
        or hmac.new(
            SANDBOX_BANK_SECRET.encode(), b"paysys.sandbox.control-token", hashlib.sha256
        ).hexdigest()
    )
# where the simulated bank sends its notifies
BANK_NOTIFY_URL = os.environ.get("BANK_NOTIFY_URL", f"{PUBLIC_BASE_URL}/gateway/bank/notify")
# where the simulated bank asks, before taking a payment, whether the order is still payable
# (paysys.bank.ask_order_payable); empty: it does not ask
BANK_ORDER_STATUS_URL = os.environ.get(
    "BANK_ORDER_STATUS_URL", f"{PUBLIC_BASE_URL}/gateway/bank/orders/"
)
