"""Relay kicks: after a commit, have the relay of the producer's alias run soon.

A kick is only a hint. Kicks arriving while one is pending coalesce, so one relay pass ships the
messages of many transactions; a lost kick only waits for the recovery pass.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from django.conf import settings
from django.core.cache import cache

from paysys.messaging import registry

logger = logging.getLogger(__name__)


def kick_key(alias: str) -> str:
    """The cache key that marks a pending kick (a relay task cleared it as it started)."""
    return f"messaging:kick:{alias}"


class _Kicker:
    """Sends relay kicks from a background thread of this process, so a producer's commit never
    waits on the cache or the broker (a hung Redis must not hang the bank's notify), and the
    kicks of many commits in the same few milliseconds become one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._pid: int | None = None

    def request(self, alias: str) -> None:
        with self._lock:
            self._pending.add(alias)
            self._idle.clear()
            if self._pid != os.getpid():  # first kick in this process, or in a forked child
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="paysys-relay-kicker", daemon=True).start()
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested kick was sent (for short-lived producers before they exit)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                aliases, self._pending = self._pending, set()
            for alias in aliases:
                kick_relay(alias)
            with self._lock:
                if not self._pending:
                    self._idle.set()


_kicker = _Kicker()
atexit.register(_kicker.flush)


def request_relay(alias: str) -> None:
    """After a commit: have the relay of ``alias`` run soon, without waiting for it."""
    _kicker.request(alias)


def flush_relay_requests(timeout: float = 5.0) -> bool:
    return _kicker.flush(timeout)


def kick_relay(alias: str) -> None:
    """Ask for a relay pass on ``alias`` soon, unless one is already pending."""
    from paysys.messaging.tasks import relay

    key = kick_key(alias)
    try:
        if not cache.add(key, 1, timeout=settings.MESSAGE_KICK_TTL):
            return
        relay.apply_async(args=[alias], queue=registry.queue_for_alias(alias), retry=False)
    except Exception:  # cache or broker down: the committed messages wait for the recovery pass
        logger.warning("relay kick for %s not sent; recovery will deliver", alias, exc_info=True)
        try:
            cache.delete(key)
        except Exception:  # noqa: BLE001 - the key expires on its own
            pass
