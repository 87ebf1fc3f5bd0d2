"""The Redis cache stores JSON, never pickle: a value planted in Redis is never run as code. The
embedded default's file cache makes its folder when it first writes, not when it is built."""

from __future__ import annotations

import pickle

import pytest
from django.conf import settings
from django.core.cache import cache

from paysys.core.cache import FileBasedCache, JsonSerializer

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


def test_the_file_cache_makes_its_folder_on_the_first_write_not_when_built(tmp_path):
    folder = tmp_path / "var" / "cache"
    file_cache = FileBasedCache(str(folder), {})  # what Django's system checks do to every cache

    assert not folder.exists()
    assert file_cache.get("k") is None and not file_cache.has_key("k")
    assert file_cache.touch("k") is False and file_cache.delete("k") is False
    file_cache.clear()
    assert not folder.exists()

    assert file_cache.add("k", 1) is True
    assert file_cache.incr("k") == 2 and folder.is_dir()
