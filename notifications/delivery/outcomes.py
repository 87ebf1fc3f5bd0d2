"""What a merchant's answer means, and when to try again: the rules, with no database work.

A 2xx is delivered; anything else is a failed attempt (a redirect is not followed, a 410 disables
the endpoint); a request the guard refused never left. A failed attempt is tried again on the
merchant's schedule until the schedule ends, then the record is FAILED, for a human.
"""

from __future__ import annotations

import random

from django.conf import settings

from notifications.models import Attempt
from paysys.core import http


def classify(response: http.Response) -> tuple[str, str, str]:
    """(outcome, error_class, error) of one attempt."""
    if response.refused:
        return Attempt.Outcome.REFUSED, response.error_class, response.error
    code = response.status_code
    if code is None:
        return Attempt.Outcome.FAILED, response.error_class or "connect", response.error
    if 200 <= code < 300:
        return Attempt.Outcome.SUCCEEDED, "", ""
    if 300 <= code < 400:
        where = f" to {response.location}" if response.location else ""
        return (
            Attempt.Outcome.FAILED,
            "redirect",
            f"HTTP {code}: redirect{where} not followed (answer 2xx at the URL itself)",
        )
    if code == 410:
        return Attempt.Outcome.FAILED, "gone", "HTTP 410 Gone: endpoint disabled until re-enabled"
    return Attempt.Outcome.FAILED, "http_status", f"HTTP {code}"


def next_wait(schedule: list[int], step: int, retry_after: float | None) -> float | None:
    """Seconds until the next attempt after a failed attempt at ``step``, or None if that was
    the last. The schedule's wait gets ±NOTIFY_RETRY_JITTER; a Retry-After longer than that is
    honoured up to twice the step's wait (a merchant cannot park its notifications for days)."""
    if step >= len(schedule):
        return None
    base = schedule[step]
    jitter = settings.NOTIFY_RETRY_JITTER
    wait = base * random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        wait = max(wait, min(retry_after, base * 2))
    return wait
