"""Relay kicks: after a commit, have the relay of the producer's alias run soon: on this
process's kicker thread (MESSAGE_RELAY_INLINE, the default: the consumers' tasks leave without a
hop through the service's worker), else as a relay task on that worker.

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


class BackgroundKicks:
    """Sends kicks from a background thread of this process, so a caller's commit never waits on
    the cache or the broker (a hung Redis must not hang the bank's notify), and the kicks of many
    commits in the same few milliseconds become one per key. ``send(key)`` is called for each
    pending key, in order. Used for relay kicks here and for TCC phase-two kicks."""

    def __init__(self, send, *, name: str) -> None:
        self._send = send
        self._name = name
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._pid: int | None = None

    def submit(self, keys) -> None:
        with self._lock:
            self._pending.update(keys)
            self._idle.clear()
            if self._pid != os.getpid():  # first use in this process, or in a forked child
                self._pid = os.getpid()
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
        self._wake.set()

    def request(self, key: str) -> None:
        self.submit([key])

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested kick was sent (short-lived processes, before they exit)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                keys, self._pending = self._pending, set()
            for key in sorted(keys):
                self._send(key)
            with self._lock:
                if not self._pending:
                    self._idle.set()


def _Kicker() -> BackgroundKicks:
    """The relay's kicker (late-bound ``relay_or_kick``, so tests may replace it)."""
    return BackgroundKicks(lambda alias: relay_or_kick(alias), name="paysys-relay-kicker")


def relay_or_kick(alias: str) -> None:
    """On the kicker thread of the process that committed: with MESSAGE_RELAY_INLINE, run the
    paced relay pass of ``alias`` here (no task, no hop: the consumers' tasks leave now); if it
    fails (its database or the broker), or without the setting, kick the relay task instead.
    The claim (SKIP LOCKED) keeps this pass and any relay task from shipping a row twice."""
    if settings.MESSAGE_RELAY_INLINE:
        from django.db import connections

        from paysys.messaging import relay

        connection = connections[alias]
        own = not connection.in_atomic_block  # the kicker thread's own connection (a test's is not)
        try:
            if own:
                connection.close_if_unusable_or_obsolete()  # a long-lived thread: a stale connection goes
            relay.relay_due(alias, paced=True)
            return
        except Exception:  # noqa: BLE001 - the relay task, or the recovery pass, ships them instead
            logger.warning("relay pass of %s here failed; kicking its worker's relay", alias, exc_info=True)
            if own:
                connection.close()
    kick_relay(alias)


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
