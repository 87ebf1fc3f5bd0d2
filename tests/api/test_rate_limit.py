"""Request limits count atomically (issue 14, item 8): parallel clients get exactly the limit through.

The count lives in the shared cache (Redis in the full stack, the file cache in the embedded
default). Before, the per-key throttle read its history, changed it and wrote it back: parallel
clients each read the same history and all got through.
"""

import multiprocessing
import secrets
import socket

import pytest
from rest_framework.test import APIClient

from paysys.api import ratelimit
from tests.api.helpers import fresh_window
from tests.concurrency import run_at_once

CLIENTS = 8
REQUESTS_EACH = 6
LIMIT = 20


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_parallel_clients_of_one_key_get_exactly_the_limit(settings, merchant_and_key):
    settings.API_RATE_LIMIT = f"{LIMIT}/hour"
    _, key = merchant_and_key

    def client_run():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return [client.get("/api/v1/balance") for _ in range(REQUESTS_EACH)]

    fresh_window(3600)
    responses = [r for run in run_at_once(*[client_run] * CLIENTS) for r in run]

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == CLIENTS * REQUESTS_EACH - LIMIT, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 3600


def count_hits(key: str, hits: int, period: int) -> list[int]:
    return [ratelimit.count_hit(key, period) for _ in range(hits)]


def test_the_count_is_atomic_across_threads():
    key, period = f"test:threads:{secrets.token_hex(8)}", 3600
    fresh_window(period)

    counts = run_at_once(*[lambda: count_hits(key, 25, period)] * CLIENTS)

    # every hit saw its own number: nothing was counted twice or lost
    assert sorted(c for run in counts for c in run) == list(range(1, CLIENTS * 25 + 1))


def test_the_count_is_atomic_across_processes():
    """Web servers may run several processes on one cache (the embedded default's file cache
    too): their hits add up, none lost."""
    key, period = f"test:processes:{secrets.token_hex(8)}", 3600
    fresh_window(period)

    with multiprocessing.get_context("fork").Pool(4) as pool:
        counts = pool.starmap(count_hits, [(key, 40, period)] * 4)

    assert sorted(c for run in counts for c in run) == list(range(1, 4 * 40 + 1))


def test_over_the_limit_says_when_the_window_ends():
    key = f"test:verdict:{secrets.token_hex(8)}"
    fresh_window(60, needed=5)

    verdicts = [ratelimit.retry_after(key, "2/min") for _ in range(3)]

    assert verdicts[:2] == [None, None]
    assert 1 <= verdicts[2] <= 60


@pytest.mark.parametrize(
    "rate, expected",
    [
        ("1200/min", (1200, 60)),
        ("5/s", (5, 1)),
        ("10/second", (10, 1)),
        ("3/hour", (3, 3600)),
        ("7/day", (7, 86400)),
    ],
)
def test_rates_read_as_drf_documents_them(rate, expected):
    assert ratelimit.parse_rate(rate) == expected


@pytest.mark.django_db(databases="__all__")
def test_a_cache_that_does_not_answer_lets_requests_through(settings, api):
    """The limit protects the platform; a cache outage must not turn every request into a 500."""
    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        }
    }
    settings.API_RATE_LIMIT = "1/hour"

    assert [api.get("/api/v1/balance").status_code for _ in range(2)] == [200, 200]
