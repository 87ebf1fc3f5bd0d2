"""The shared rate bound (paysys.core.ratelimit): at most N events in any second, across threads
and processes, in the full stack's Redis and in the embedded default's locked file alike."""

import secrets
import threading
import time

import pytest

from paysys.core.ratelimit import SharedRateLimit


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path  # the embedded store's files


def limit(n: int) -> SharedRateLimit:
    return SharedRateLimit(f"test-{secrets.token_hex(4)}", lambda: n)


def test_a_burst_gets_n_events_then_waits_for_the_window_to_move_on():
    bound = limit(5)

    assert [bound.try_acquire() for _ in range(7)] == [True] * 5 + [False] * 2

    time.sleep(1.3)  # past the 1.1-1.2 s the counted slots cover
    assert bound.try_acquire()


def test_acquire_waits_for_a_turn_until_its_deadline():
    bound = limit(1)
    assert bound.acquire(deadline=time.monotonic() + 1)

    started = time.monotonic()
    assert not bound.acquire(deadline=started + 0.3)  # no turn within 0.3 s
    assert bound.acquire(deadline=time.monotonic() + 3)  # the next one comes after about 1.1 s
    assert time.monotonic() - started >= 1.0


def test_many_threads_together_never_exceed_the_bound_in_any_second():
    # given 6 threads taking events as fast as they are allowed, for 3 s, under a bound of 20/s
    bound, granted, lock = limit(20), [], threading.Lock()
    stop = time.monotonic() + 3.0

    def take():
        while time.monotonic() < stop:
            if bound.acquire(deadline=stop):
                with lock:
                    granted.append(time.monotonic())

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then no second (any sliding window) holds more than 20, and the bound was the limit: ~20 / 1.15 s
    granted.sort()
    most = max(sum(1 for u in granted[i:] if u - t < 1.0) for i, t in enumerate(granted))
    assert most <= 20
    assert len(granted) >= 40


def test_a_name_that_could_escape_its_key_or_file_is_refused():
    with pytest.raises(ValueError):
        SharedRateLimit("../etc", lambda: 1)


def test_the_count_lives_in_redis_in_the_full_stack_and_in_a_locked_file_otherwise(settings):
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    from paysys.core import ratelimit

    bound = limit(3)
    assert bound.try_acquire()

    if isinstance(caches["default"], RedisCache):  # every process of every machine shares it
        counted = [
            caches["default"].get(f"ratelimit:{bound.name}:{ratelimit._slot() - back}")
            for back in (0, 1)
        ]
        assert 1 in counted
    else:  # the embedded default: one machine, one file
        assert (settings.VAR_DIR / f"ratelimit-{bound.name}.json").read_text().endswith("1}")
