"""The Redis cache's serializer: JSON, never pickle.

Django's Redis cache pickles every value but plain integers, so whoever can write to that Redis
(the broker's, by default) could make any process that reads a key run code of their choosing.
paysys caches only counters, flags and times (rate limits, kicks, batches in flight, heartbeats),
all plain JSON. Integers stay raw, as Django keeps them, for INCR. A value that is not JSON (an
older release's, or planted) is read as nothing: never decoded as code.
"""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)


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
