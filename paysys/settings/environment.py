"""How the settings read the environment: typed helpers, one per kind of value.

Every environment variable keeps its name, default and meaning (docs/operations.md lists them):
they are an interface that deployments, the Procfile and the tests rely on.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

# a secret shorter than this is refused (SECRET_KEY asks for 50: see paysys/settings/security.py)
MIN_SECRET_LENGTH = 32
_GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int_list(name: str, default: str) -> list[int]:
    """A comma-separated list of whole numbers (a schedule of waits, in seconds)."""
    return [int(x) for x in env_list(name, default)]


def env_secret(
    name: str,
    *,
    dev_default: str | None = None,
    required: bool = True,
    min_length: int = MIN_SECRET_LENGTH,
) -> str:
    """A secret from the environment, at least ``min_length`` characters.

    ``dev_default`` stands in for an unset variable; callers pass one only where dev secrets are
    allowed (the embedded default with DEBUG on: paysys/settings/deployment.py). Anywhere else a
    missing required secret stops start-up with a message saying what to set.
    """
    value = os.environ.get(name, "")
    if not value:
        if dev_default is not None:
            return dev_default
        if not required:
            return ""
        raise ImproperlyConfigured(
            f"{name} is not set. Outside the embedded default (no DATABASE_URL, DEBUG on) every secret "
            f"comes from the environment: export {name}=$({_GENERATE})"
        )
    if len(value) < min_length:
        raise ImproperlyConfigured(
            f"{name} is {len(value)} characters long; use at least {min_length} random characters: "
            f"export {name}=$({_GENERATE})"
        )
    return value
