"""The Redis cache stores JSON, never pickle: a value planted in Redis is never run as code."""

from __future__ import annotations

import pickle

import pytest
from django.conf import settings
from django.core.cache import cache

from paysys.core.cache import JsonSerializer

PLANTED: list[str] = []


class Payload:
    def __reduce__(self):
        return (PLANTED.append, ("ran",))


def test_values_round_trip_as_json_and_integers_stay_raw():
    serializer = JsonSerializer()
    assert serializer.dumps(7) == 7  # INCR works on it
    for value in (1733400000.25, True, "x", {"a": [1, 2]}, None):
        assert serializer.loads(serializer.dumps(value)) == value
    assert serializer.loads(b"42") == 42


def test_a_pickled_value_is_read_as_nothing_and_never_run():
    assert JsonSerializer().loads(pickle.dumps(Payload())) is None
    assert PLANTED == []


@pytest.mark.skipif(
    not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"),
    reason="the full stack's Redis cache",
)
def test_a_pickle_planted_in_redis_is_never_run_by_a_cache_read():
    key = cache.make_and_validate_key("test:planted")
    client = cache._cache.get_client(key, write=True)
    client.set(key, pickle.dumps(Payload()))
    try:
        assert cache.get("test:planted", "default") is None
        assert PLANTED == []
        cache.set("test:planted", {"at": 1.5}, 10)
        assert cache.get("test:planted") == {"at": 1.5}
        assert cache.add("test:count", 0, 10) and cache.incr("test:count") == 1
    finally:
        cache.delete_many(["test:planted", "test:count"])
