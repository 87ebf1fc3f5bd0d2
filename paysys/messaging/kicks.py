"""Relay kicks: after a commit, have the relay of the producer's alias run soon: on this
process's kicker thread (MESSAGE_RELAY_INLINE, the default: the consumers' tasks leave without a
hop through the service's worker), else as a relay task on that worker.

A kick is only a hint (:class:`paysys.core.kicks.Kick`). Kicks arriving while one is pending
coalesce, so one relay pass ships the messages of many transactions; a lost kick only waits for
the recovery pass.
"""

from __future__ import annotations

import logging

from django.conf import settings

from paysys.core.kicks import BackgroundKicks, Kick
from paysys.core.sql import own_connection
from paysys.messaging import registry, relay

logger = logging.getLogger(__name__)

RELAY = Kick(
    "messaging.relay",
    key="messaging:kick:{target}",
    ttl_setting="MESSAGE_KICK_TTL",
    route=lambda alias: {"queue": registry.queue_for_alias(alias)},
    run_here=lambda alias: relay_or_kick(alias),  # late-bound, so tests may replace it
    thread_name="paysys-relay-kicker",
)


def _Kicker() -> BackgroundKicks:
    """A relay kicker of its own (tests: this process's may have a thread from another test)."""
    return BackgroundKicks(lambda alias: relay_or_kick(alias), name="paysys-relay-kicker")


def relay_or_kick(alias: str) -> None:
    """On the kicker thread of the process that committed: with MESSAGE_RELAY_INLINE, run the
    paced relay pass of ``alias`` here (no task, no hop: the consumers' tasks leave now); if it
    fails (its database or the broker), or without the setting, kick the relay task instead.
    The claim (SKIP LOCKED) keeps this pass and any relay task from shipping a row twice."""
    if settings.MESSAGE_RELAY_INLINE:
        try:
            with own_connection(alias):
                relay.relay_due(alias, paced=True)
            return
        except Exception:  # noqa: BLE001 - the relay task, or the recovery pass, ships them instead
            logger.warning(
                "relay pass of %s here failed; kicking its worker's relay", alias, exc_info=True
            )
    kick_relay(alias)


def request_relay(alias: str) -> None:
    """After a commit: have the relay of ``alias`` run soon, without waiting for it."""
    RELAY.request(alias)


def flush_relay_requests(timeout: float = 5.0) -> bool:
    return RELAY.flush(timeout)


def kick_relay(alias: str) -> None:
    """Ask for a relay pass on ``alias`` soon, unless one is already pending."""
    RELAY.send(alias)
