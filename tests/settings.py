"""Settings of a test run: paysys.settings with secrets of this run's own.

Outside the embedded default every secret must come from the environment (paysys.settings
refuses to start otherwise). A test run makes random ones unless CI exported its own, and puts
them in the environment so the processes it starts (workers, servers) share them.
"""

import os
import secrets

for _name in ("SECRET_KEY", "BANK_SHARED_SECRET"):
    os.environ.setdefault(_name, secrets.token_urlsafe(48))

from paysys.settings import *  # noqa: E402,F401,F403
from paysys.settings.environment import env_bool  # noqa: E402

# each test asks /healthz afresh (the web process caches the verdict for 2 s)
HEALTHZ_CACHE_SECONDS = 0

# The suite's TCC tests take phase two through the participants' workers (passes, resends): the
# path every confirm not finished at once falls back to, and every cancel. tests/tcc/test_inline.py
# turns the confirms at once on, as do the stacks and workers started with paysys.settings.
TCC_PHASE_TWO_INLINE = env_bool("TCC_PHASE_TWO_INLINE", False)
# Likewise the relay: the suite's kicks send relay tasks (tests/messaging/test_relay.py runs
# the pass in the producer's thread, as the stacks and workers do).
MESSAGE_RELAY_INLINE = env_bool("MESSAGE_RELAY_INLINE", False)

# a password hash costs nothing here (PBKDF2's 1,000,000 rounds cost ~0.3 s a user on the CI box);
# PBKDF2 stays listed so a hash made by a stack's own process still verifies
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
