"""A rate bound shared by every process of a deployment: at most N events in any one second.

For calls paysys makes to an outside party that must not be flooded however many workers make
them (order polling asks the bank). Time is cut into slots of ``SLOT_SECONDS``; every slot has a
counter in a store all processes share. An event at time t is allowed only when the events
counted in t's slot and the ``WINDOW_SLOTS - 1`` slots before it (at least the last 1.1 s), this
one included, stay within N. So no 1.1 s, hence no second, ever holds more than N events: not at
a window's edge either (a fixed one-second window lets 2N through around its edge), and a
request may reach the other side up to 100 ms after it was allowed without breaking the bound
there. The price: a saturated bound runs at about N / 1.15 events per second.

The store: with Redis as the cache (the full stack) one counter key per slot, incremented
atomically and expiring by itself. Otherwise (the embedded default, one machine) one small JSON
file under ``VAR_DIR``, read and written under an exclusive ``flock``: Django's file cache
increments by read-then-write and culls entries at random, so it cannot count.
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

SLOT_SECONDS = 0.1
WINDOW_SLOTS = 12  # the current slot and the 11 before it: at least 1.1 s
_KEY_TTL = 5  # seconds a slot's counter outlives its window (Redis store)


class SharedRateLimit:
    """At most ``per_second()`` events per second across every process sharing the store.
    ``per_second`` is read at every attempt, so a changed setting applies at once."""

    def __init__(self, name: str, per_second: Callable[[], int]):
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            raise ValueError(
                f"rate limit name {name!r}: lower-case letters, digits, '-' and '_' only"
            )
        self.name = name
        self.per_second = per_second

    def try_acquire(self) -> bool:
        """Take one event now if the bound allows it. Raises if the store cannot be reached."""
        limit = self.per_second()
        cache = _backend()
        if not isinstance(cache, RedisCache):
            return _take_in_file(self.name, limit)
        while True:
            taken = _take_in_redis(cache, self.name, _slot(), limit)
            if taken is not None:
                return taken
            # the clock crossed into the next slot while counting: count again there

    def acquire(self, *, deadline: float) -> bool:
        """Take one event, waiting for the bound to allow it until ``deadline`` (``time.monotonic()``
        seconds). False when it did not in time."""
        while not self.try_acquire():
            wait = SLOT_SECONDS - time.time() % SLOT_SECONDS + 0.001  # the next slot's start
            if time.monotonic() + wait >= deadline:
                return False
            time.sleep(wait)
        return True


_shared_backend = None


def _backend():
    """The default cache's backend, one for all threads of the process (redis-py's pool is
    thread-safe): ``caches["default"]`` is per thread, so every short-lived polling thread would
    open a connection of its own."""
    global _shared_backend
    if _shared_backend is None:
        _shared_backend = caches.create_connection("default")
    return _shared_backend


def _slot() -> int:
    return int(time.time() / SLOT_SECONDS)


def _take_in_redis(cache: RedisCache, name: str, slot: int, limit: int) -> bool | None:
    """Count this event in ``slot`` and read the window's earlier slots in ONE round trip (SET NX
    with the expiry, INCR, MGET, pipelined on one connection); a refused event is taken back
    (DECR). None when the clock crossed into the next slot meanwhile (counted again there).
    Django's ``add``/``incr``/``get_many`` would cost four round trips, and a saturated bound is
    asked by every waiting thread at every slot."""
    keys = [
        cache.make_and_validate_key(f"ratelimit:{name}:{s}")
        for s in range(slot - WINDOW_SLOTS + 1, slot + 1)
    ]
    client = cache._cache.get_client(keys[-1], write=True)
    pipe = client.pipeline(transaction=False)
    pipe.set(keys[-1], 0, ex=_KEY_TTL, nx=True)
    pipe.incr(keys[-1])
    pipe.mget(keys[:-1])
    _, count, earlier = pipe.execute()
    if _slot() == slot and count + sum(int(n) for n in earlier if n is not None) <= limit:
        return True
    client.decr(keys[-1])  # refused, or counted in a slot that is over: this attempt is no event
    return None if _slot() != slot else False


def _take_in_file(name: str, limit: int) -> bool:
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    with open(settings.VAR_DIR / f"ratelimit-{name}.json", "a+", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
        slot = _slot()  # read under the lock: events are counted in the order they happen
        f.seek(0)
        try:
            counts = {int(s): n for s, n in json.loads(f.read() or "{}").items()}
        except (ValueError, AttributeError):
            counts = {}  # a torn or foreign file: start counting afresh
        counts = {s: n for s, n in counts.items() if s > slot - WINDOW_SLOTS}
        if sum(counts.values()) >= limit:
            return False
        counts[slot] = counts.get(slot, 0) + 1
        f.seek(0)
        f.truncate()
        json.dump(counts, f)
        return True
