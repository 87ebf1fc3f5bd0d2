"""Request limits: a fixed window per key, counted atomically in the shared cache.

Every limit (the per-API-key throttle, the per-address limits of the public endpoints) counts
here. The count must be one atomic step: a read, an increment in Python and a write back let
parallel requests each read the same count and all pass (DRF's own throttle does exactly that).

* Redis (the full stack): SET NX with the window's expiry, then INCR, in one pipeline (one round
  trip); each atomic in the server, for every thread and process of every web server.
* The embedded default's file cache has no atomic increment (Django's is get + set): the count is
  read and written under an exclusive ``flock`` on a file in the cache directory, which orders
  threads and processes alike.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager

from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

# DRF's rate syntax ("N/period", the period read by its first letter): 1200/min, 10/second, 3/h
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LOCK_NAME = "ratelimit.lock"  # not *.djcache: the file cache never lists, culls or clears it


def parse_rate(rate: str) -> tuple[int, int]:
    """``"1200/min"`` -> (1200, 60)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period[:1]]


def count_hit(key: str, period: int) -> int:
    """Count one hit in the current ``period``-second window of ``key``; the window's count so
    far, this hit included."""
    window = int(time.time() // period)
    key = f"ratelimit:{key}:{window}"
    cache = caches["default"]
    if isinstance(cache, FileBasedCache):
        with _exclusive(os.path.join(cache._dir, LOCK_NAME)):
            count = cache.get(key, 0) + 1
            cache.set(key, count, timeout=period + 1)
            return count
    if isinstance(
        cache, RedisCache
    ):  # SET NX EX and INCR in one round trip (incr() alone costs two)
        key = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(key, write=True).pipeline(transaction=False)
        pipe.set(key, 0, ex=period + 1, nx=True)
        pipe.incr(key)
        return pipe.execute()[1]
    cache.add(key, 0, timeout=period + 1)
    return cache.incr(key)


def retry_after(key: str, rate: str) -> int | None:
    """Count one request under ``key`` against ``rate``: None when it is within the limit, else the
    seconds until the window ends (for ``Retry-After``). A cache that does not answer lets the
    request through: the limit protects the platform, it must not take it down."""
    limit, period = parse_rate(rate)
    try:
        count = count_hit(key, period)
    except Exception:  # noqa: BLE001 - see the docstring; the cache's own error is logged
        logger.warning("rate limit not counted: the cache did not answer", exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1, int(period - time.time() % period))


@contextmanager
def _exclusive(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one open file per call: threads exclude each other too
        yield
    finally:
        os.close(fd)  # releases the lock
