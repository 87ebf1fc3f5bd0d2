"""What core's and other apps' management commands share."""

from __future__ import annotations

import getpass

from django.core.management.base import CommandError

from paysys.core.errors import DomainError


def command_actor() -> str:
    """Who runs this command, as who-did-it fields record it: ``command:<OS user>``."""
    try:
        return f"command:{getpass.getuser()}"
    except (KeyError, OSError):
        return "command:unknown"


def command_error(exc: DomainError, *, prefix: str = "") -> CommandError:
    """A domain error as the command's error: its message and, if any, which fields and why."""
    details = "; ".join(f"{k}: {v}" for k, v in (exc.fields or {}).items())
    return CommandError(prefix + exc.message + (f" ({details})" if details else ""))
