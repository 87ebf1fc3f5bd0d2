"""Fixtures for real-fault tests. They need the full stack (MariaDB + Redis or RabbitMQ), as in CI."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from paysys.celery import app as celery_app
from tests.faults import brokers
from tests.faults.harness import TcpProxy, Worker, service_env

# this suite's own Redis database (or RabbitMQ virtual host paysys-faults-<n>): losing its messages
# never touches anyone else's (several checkouts on one machine each set their own PAYSYS_FAULT_REDIS_DB)
FAULT_REDIS_DB = int(os.environ.get("PAYSYS_FAULT_REDIS_DB", "9"))


def _full_stack() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("mysql") and brokers.is_supported(
        settings.CELERY_BROKER_URL
    )


@pytest.fixture(autouse=True)
def require_full_stack():
    if _full_stack():
        return
    reason = (
        "fault tests need the full stack: set DATABASE_URL=mysql://root@127.0.0.1:3306/paysys "
        "and CELERY_BROKER_URL=redis://127.0.0.1:6379/0 (as .ci/run does) or amqp://guest:guest@127.0.0.1:5672//"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _use_broker(url: str) -> None:
    # kombu keeps one connection pool per broker URL; dropping the app's handles is enough
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app.conf.CELERY_BROKER_URL = url


@pytest.fixture
def broker_url():
    """A broker place of its own, empty, used by this process and by the workers."""
    url = brokers.isolated(settings.CELERY_BROKER_URL, FAULT_REDIS_DB)
    brokers.lose_everything(url)
    previous = celery_app.conf.broker_url
    _use_broker(url)
    yield url
    _use_broker(previous)
    brokers.lose_everything(url)


@pytest.fixture
def fast_schedule(settings):
    """Resends after 1 s instead of minutes, so recovery is observable within a test."""
    settings.MESSAGE_RESEND_SCHEDULE = [0, 1, 1, 1, 1]
    return settings.MESSAGE_RESEND_SCHEDULE


@pytest.fixture
def workers(broker_url, tmp_path):
    """Start real worker processes: ``workers("orders")``, ``**settings`` as environment
    variables (``workers("core", TCC_TRY_TIMEOUT="5")``); all are killed at teardown."""
    started: list[Worker] = []

    def start(
        queues: str,
        *,
        ports: dict[str, int] | None = None,
        name: str | None = None,
        **settings: str,
    ) -> Worker:
        env = service_env(broker_url, ports=ports, MESSAGE_RESEND_SCHEDULE="0,1,1,1,1", **settings)
        worker = Worker(name or queues.replace(",", "-"), queues, env, tmp_path)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def db_proxy():
    """A proxy in front of MariaDB; always reopened... and closed at teardown."""
    db = settings.DATABASES["default"]
    proxy = TcpProxy(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 3306)).open()
    yield proxy
    proxy.close()
