"""Helpers for driving notification delivery in-process."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from notifications.delivery import PassResult
from notifications.delivery.passes import DeliveryPass


class _PassAt(DeliveryPass):
    def __init__(self, now: datetime) -> None:
        super().__init__()
        self._fixed_now = now

    def now(self) -> datetime:
        return self._fixed_now

    def _until_next_due(self) -> float | None:
        return None  # its clock stands still: nothing due later ever comes due


def deliver_due_at(now: datetime) -> PassResult:
    """``deliver_due()`` with its clock at ``now``: the records due then are sent and their
    retries scheduled from then (the request's ``webhook-timestamp`` is still the real time)."""
    return _PassAt(now).run(settings.NOTIFY_PASS_SECONDS, drain=True)
