"""Worker liveness: every Celery worker (and beat) says "alive" in the cache every few seconds.

A worker, once ready, starts one daemon thread that writes ``heartbeat:<queue>`` (the time, in
epoch seconds) for each queue it consumes, every ``WORKER_HEARTBEAT_SECONDS``; beat does the same
as ``heartbeat:beat``. Nothing is written per task. A graceful shutdown deletes its keys (dead
at once); a killed process simply stops writing and is dead once its last beat is
``WORKER_HEARTBEAT_SECONDS * WORKER_DEAD_AFTER_BEATS`` old. The cache is the one every process
shares: Redis in the full stack, a file cache under ``var/`` in the embedded default.

Readers: ``/healthz`` (a dead worker makes it "degraded"), ``/healthz/detail`` and the admin
overview (``paysys.ops``).

The key is per queue, not per process: a queue is alive while any of its workers beats. Two
workers on one queue share it, so a clean stop of one shows the queue dead until the other's
next beat (at most ``WORKER_HEARTBEAT_SECONDS``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from celery import signals
from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

BEAT = "beat"
_stop = threading.Event()
_names: list[str] = []


def heartbeat_key(name: str) -> str:
    return f"heartbeat:{name}"


def expected_names() -> list[str]:
    """Every queue a worker of the stack consumes, and beat: what must be alive."""
    return [queue.name for queue in settings.CELERY_TASK_QUEUES] + [BEAT]


def record(names: list[str], *, now: float | None = None) -> None:
    """One heartbeat for ``names``. The key outlives a few missed beats, then the cache forgets it."""
    at = time.time() if now is None else now
    ttl = int(settings.WORKER_HEARTBEAT_SECONDS * settings.WORKER_DEAD_AFTER_BEATS * 6) + 1
    cache.set_many({heartbeat_key(name): at for name in names}, timeout=ttl)


def forget(names: list[str]) -> None:
    cache.delete_many([heartbeat_key(name) for name in names])


@dataclass(frozen=True)
class Liveness:
    name: str
    alive: bool
    last_seen: datetime | None

    def as_json(self) -> dict:
        return {
            "alive": self.alive,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }


def liveness(names: list[str] | None = None, *, now: float | None = None) -> dict[str, Liveness]:
    """name -> alive or not, with its last heartbeat. One cache read for all of them."""
    names = expected_names() if names is None else names
    now = time.time() if now is None else now
    horizon = settings.WORKER_HEARTBEAT_SECONDS * settings.WORKER_DEAD_AFTER_BEATS
    try:
        beats = cache.get_many([heartbeat_key(name) for name in names])
    except Exception:  # noqa: BLE001 - no cache answers: nobody can be shown alive
        logger.warning("heartbeats unreadable: the cache does not answer", exc_info=True)
        beats = {}
    result = {}
    for name in names:
        at = beats.get(heartbeat_key(name))
        seen = datetime.fromtimestamp(at, tz=UTC) if at is not None else None
        result[name] = Liveness(name, at is not None and now - at <= horizon, seen)
    return result


def _beat_forever(names: list[str]) -> None:
    while not _stop.is_set():
        try:
            record(names)
        except Exception:  # noqa: BLE001 - the cache is down for a moment: the next beat tries again
            logger.warning("heartbeat of %s not recorded", ", ".join(names), exc_info=True)
        _stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


def start(names: list[str]) -> None:
    """Start this process's heartbeat thread for ``names`` (once per process)."""
    if _names:
        return
    _names.extend(names)
    _stop.clear()
    threading.Thread(
        target=_beat_forever, args=(list(names),), name="paysys-heartbeat", daemon=True
    ).start()
    logger.info("heartbeat every %ss for %s", settings.WORKER_HEARTBEAT_SECONDS, ", ".join(names))


def stop() -> None:
    _stop.set()
    if _names:
        try:
            forget(_names)
        except Exception:  # noqa: BLE001 - shutting down anyway: the key ages out
            pass
        _names.clear()


@signals.worker_ready.connect
def _on_worker_ready(sender, **kwargs) -> None:
    start(sorted(sender.app.amqp.queues.consume_from))


@signals.beat_init.connect
def _on_beat_init(sender, **kwargs) -> None:
    start([BEAT])


@signals.worker_shutdown.connect
def _on_worker_shutdown(sender, **kwargs) -> None:
    stop()
