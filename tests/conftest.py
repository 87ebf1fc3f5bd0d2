"""Shared fixtures: merchants, payers, API clients, and an in-memory broker for in-process code.

Tests run against whatever the environment configures: SQLite files in the embedded default,
MariaDB + Redis in CI (``DATABASE_URL`` / ``CELERY_BROKER_URL``). In-process code publishes to
an in-memory broker so unit tests never leave tasks in a shared Redis; fault tests start real
worker processes on the real broker themselves.
"""

from __future__ import annotations

import itertools
import os

import hypothesis
import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from paysys.celery import app as celery_app
from paysys.core.services import agreement_issue, merchant_create, payer_create

# CI (CI=true) draws the same examples every run, so a failure there reproduces anywhere with
# CI=true; elsewhere examples vary from run to run, and a failure prints its seed
# (pytest --hypothesis-seed=N reproduces it).
hypothesis.settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis.settings.register_profile("dev", print_blob=True)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "dev")

ALL_DATABASES = "__all__"
_counter = itertools.count(1)


def pytest_configure(config):
    # Celery prefers the CELERY_BROKER_URL environment variable over its configuration
    os.environ.pop("CELERY_BROKER_URL", None)
    celery_app.conf.CELERY_BROKER_URL = "memory://"  # the namespaced key is the one Celery reads
    celery_app.conf.CELERY_BROKER_TRANSPORT = (
        None  # the embedded mode's filesystem transport would win
    )


@pytest.fixture(autouse=True)
def chart_of_accounts(request):
    """Migration 0002 seeds the chart, but a transactional test's flush removes those rows, and
    with --reuse-db the flushed state outlives the session: restore what is missing."""
    if request.node.get_closest_marker("django_db"):
        from accounting.services import chart_of_accounts_seed

        chart_of_accounts_seed()


@pytest.fixture(autouse=True)
def _forget_relay_kicks():
    """A relay kick pending from an earlier test would swallow this test's kicks for a few seconds,
    and a paced batch an earlier test left in flight (its worker killed) would hold its queue for
    MESSAGE_BATCH_IN_FLIGHT_TTL.

    Only paysys' own keys are deleted: in the full stack the cache is a Redis database that a
    running stack may share, so the cache is never flushed. (Throttle counters need no reset:
    every test's merchant, hence every API key, is new.)
    """
    from paysys.messaging import relay

    cache.delete_many(
        [f"messaging:kick:{alias}" for alias in settings.DATABASES]
        + [f"tcc:kick:{queue}" for queue in settings.SERVICE_QUEUES]  # TCC phase-two kicks too
        + [
            relay.slot_key(alias, queue)
            for alias in settings.DATABASES
            for queue in (q.name for q in settings.CELERY_TASK_QUEUES)
        ]
    )
    yield


@pytest.fixture(autouse=True)
def _forget_account_ids():
    """The funds and points services remember account ids per process (a key's id never changes
    in a database); a transactional test's flush empties the tables, so start each test afresh
    (the services also recover from a stale id by themselves: tests/accounts/test_tcc.py)."""
    from accounts import services

    services._known_ids.clear()
    yield


@pytest.fixture
def every_worker_alive():
    """Every worker and beat has just recorded its heartbeat (paysys.core.heartbeats)."""
    from paysys.core import heartbeats

    names = heartbeats.expected_names()
    heartbeats.record(names)
    yield names
    heartbeats.forget(names)


@pytest.fixture(autouse=True)
def _every_api_status_is_documented(monkeypatch):
    """Any status any test provokes on an API operation must be in the published schema (issue 15):
    every answer the Django test client gets is checked against its operation's documented statuses."""
    from django.test import Client

    from tests.api.documented import undocumented_status

    request = Client.request

    def checked(self, **kwargs):
        response = request(self, **kwargs)
        problem = undocumented_status(response)
        assert problem is None, problem
        return response

    monkeypatch.setattr(Client, "request", checked)


@pytest.fixture
def make_merchant(db):
    def make(
        name: str | None = None,
        notify_url: str = "http://127.0.0.1:9/notify",
        fee_rate_bp: int = 60,
    ):
        return merchant_create(
            name=name or f"merchant-{next(_counter)}",
            notify_url=notify_url,
            fee_rate_bp=fee_rate_bp,
        )

    return make


@pytest.fixture
def merchant_and_key(make_merchant):
    return make_merchant()


@pytest.fixture
def merchant(merchant_and_key):
    return merchant_and_key[0]


@pytest.fixture
def payer(db):
    return payer_create(name=f"payer-{next(_counter)}")


@pytest.fixture
def issue_agreement(db):
    """``issue(payer, merchant, **limits) -> (agreement, payer_token)``: the payer's agreement that
    ``merchant`` may charge its wallet (balance payments)."""

    def issue(payer, merchant, **limits):
        return agreement_issue(
            payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:test", **limits
        )

    return issue


@pytest.fixture
def api(merchant_and_key) -> APIClient:
    """An API client authenticated as ``merchant``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {merchant_and_key[1]}")
    return client


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


PRODUCER_ADDRESS = "93.184.215.14"  # public; prepare only resolves the name, nothing connects


@pytest.fixture
def producer_dns(monkeypatch):
    """producer.example, the check-back host of the message API tests, resolves (to a public
    address) as a real producer's name would; every other name goes to the real resolver."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "producer.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PRODUCER_ADDRESS, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
