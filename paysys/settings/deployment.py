"""Which deployment this is: DEBUG, the embedded default or a full stack, where local files go,
the public address, and whether the bank simulator (an outside party) is part of it."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from paysys.settings.environment import env_bool, env_int, env_list

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("PAYSYS_VAR_DIR", BASE_DIR / "var"))

DEBUG = env_bool("DEBUG", True)
# the embedded default (no DATABASE_URL): a developer's machine, the only place with dev secrets
EMBEDDED = not os.environ.get("DATABASE_URL")
# lower case: a fact the other settings modules read, not a Django setting
dev_secrets_allowed = EMBEDDED and DEBUG

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
PORT = env_int("PORT", 8000)
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")

# --- the sandbox (bank simulator): an outside party, mounted only where enabled --------------

# on by default only with DEBUG on (the embedded default, the dev full stack, tests); turning it
# on with DEBUG off is refused unless SANDBOX_ALLOW_IN_PRODUCTION says so explicitly (staging).
# A refusal here, not a system check: the simulator's apps, URLs and queues follow this setting in
# every process that loads settings, checks run or not (paysys/core/checks.py).
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", DEBUG)
SANDBOX_ALLOW_IN_PRODUCTION = env_bool("SANDBOX_ALLOW_IN_PRODUCTION", False)
if SANDBOX_ENABLED and not DEBUG and not SANDBOX_ALLOW_IN_PRODUCTION:
    raise ImproperlyConfigured(
        "SANDBOX_ENABLED is on with DEBUG off: the bank simulator would let anyone mark orders paid. "
        "Unset SANDBOX_ENABLED, or set SANDBOX_ALLOW_IN_PRODUCTION=true for a staging deployment whose bank it is."
    )
