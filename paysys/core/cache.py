"""The Redis cache: its serializer (JSON, never pickle) and a client made once per pool; the
embedded default's file cache, whose folder is made by the first write.

Django's Redis cache pickles every value but plain integers, so whoever can write to that Redis
(the broker's, by default) could make any process that reads a key run code of their choosing.
paysys caches only counters, flags and times (rate limits, kicks, batches in flight, heartbeats),
all plain JSON. Integers stay raw, as Django keeps them, for INCR. A value that is not JSON (an
older release's, or planted) is read as nothing: never decoded as code.
"""

from __future__ import annotations

import json
import logging
import os

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache as DjangoFileBasedCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

logger = logging.getLogger(__name__)


class _ClientPerPool(RedisCacheClient):
    """Django's client builds a new ``redis.Redis`` for every cache call, and each one fills a
    table of some 200 response callbacks first: 2-9 % of a worker's CPU under load went there.
    One ``redis.Redis`` per connection pool serves every call (it is thread-safe, and the pool
    still hands each command a connection of its own and opens new ones after a fork)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))
        return client


class RedisCache(DjangoRedisCache):
    """Django's Redis cache with :class:`_ClientPerPool` (settings: CACHES BACKEND)."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ClientPerPool


class JsonSerializer:
    def dumps(self, obj):
        if type(obj) is int:  # not bool: INCR and DECR work on the raw integer
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data):
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return json.loads(data)
        except ValueError:  # UnicodeDecodeError included
            logger.warning("a cache value that is not JSON was ignored (%d bytes)", len(data))
            return None


class FileBasedCache(DjangoFileBasedCache):
    """Django's file cache (settings: CACHES BACKEND in the embedded default), but its folder is
    made by the first write (Django's ``set`` makes it each time), not when the cache is built:
    Django's system checks build every cache, and a process that then refuses to start (a check,
    ``runstack``'s refusals) left ``var/cache`` behind. A read of a missing folder finds nothing."""

    def __init__(self, dir, params):
        BaseCache.__init__(self, params)
        self._dir = os.path.abspath(dir)
