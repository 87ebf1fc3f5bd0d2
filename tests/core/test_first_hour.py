"""A new user's first hour: quiet logs, `manage.py migrate` on a fresh clone, API docs offline."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client

from paysys.core import logfilters
from paysys.core.logfilters import RoutineToDebug
from tests.core.test_runstack import embedded_env


def record(name: str, level: int, msg: str, *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


@pytest.fixture
def root_at_info():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


ROUTINE = [
    record(
        "celery.beat",
        logging.INFO,
        "Scheduler: Sending due task %s (%s)",
        "orders.poll_bank",
        "orders.poll_bank",
    ),
    record(
        "celery.worker.strategy", logging.INFO, "Task %s[%s] received", "orders.poll_bank", "1b2c"
    ),
    record(
        "celery.app.trace",
        logging.INFO,
        "Task %s[%s] succeeded in %ss: %s",
        "messaging.recover_messages",
        "1b2c",
        0.01,
        0,
    ),
    record(
        "django.request",
        logging.WARNING,
        "Not Found: %s",
        "/sandbox/bank/payments/PS1",
        status_code=404,
    ),
    # every task's receipt and success: the business step logs itself ({'acked': [5], 'failed': []} said nothing)
    record(
        "celery.worker.strategy", logging.INFO, "Task %s[%s] received", "messaging.consume", "1b2c"
    ),
    record(
        "celery.app.trace",
        logging.INFO,
        "Task %s[%s] succeeded in %ss: %s",
        "messaging.consume",
        "1b2c",
        0.01,
        {"acked": [5], "failed": []},
    ),
    # the merchant simulator answering 503 because a test told it to
    record(
        "django.request",
        logging.ERROR,
        "Service Unavailable: %s",
        "/sandbox/merchant/notify",
        status_code=503,
        request=SimpleNamespace(path="/sandbox/merchant/notify"),
    ),
]
KEPT = [
    record(
        "celery.app.trace",
        logging.ERROR,
        "Task %s[%s] raised unexpected: %r",
        "orders.poll_bank",
        "1b2c",
        "boom",
    ),
    record(
        "django.request",
        logging.ERROR,
        "Service Unavailable: %s",
        "/api/v1/orders",
        status_code=503,
        request=SimpleNamespace(path="/api/v1/orders"),
    ),
    record("django.request", logging.WARNING, "Bad Request: %s", "/api/v1/orders", status_code=400),
    record("orders.polling", logging.WARNING, "polling %s: %s", "PS1", "bank down"),
]


@pytest.mark.parametrize("rec", ROUTINE, ids=lambda r: r.name)
def test_routine_lines_become_debug_and_are_hidden_at_info(rec, root_at_info):
    assert RoutineToDebug().filter(rec) is False
    assert rec.levelname == "DEBUG"


@pytest.mark.parametrize("rec", KEPT, ids=lambda r: f"{r.name}-{r.levelname}")
def test_what_a_human_should_read_is_kept(rec, root_at_info):
    level = rec.levelno
    assert RoutineToDebug().filter(rec) is True
    assert rec.levelno == level


def test_routine_lines_show_with_log_level_debug():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert (
            RoutineToDebug().filter(
                record("celery.beat", logging.INFO, "Sending due task orders.poll_bank")
            )
            is True
        )
    finally:
        root.setLevel(level)


def test_the_console_handler_uses_the_filters():
    assert settings.LOGGING["handlers"]["console"]["filters"] == [
        "routine_to_debug",
        "client_error_flood",
    ]


def test_a_flood_of_4xx_lines_is_cut_to_a_few_a_second_and_says_how_many_it_dropped(monkeypatch):
    """A stranger's 500 bad API keys a second were 500 WARNING lines a second (about 2 MB of log
    a minute); 5xx lines and tracebacks always pass."""
    now = [1000.2]
    monkeypatch.setattr(logfilters.time, "monotonic", lambda: now[0])
    flood = logfilters.ClientErrorFlood()

    def unauthorized():
        return record(
            "django.request", logging.WARNING, "Unauthorized: %s", "/api/v1/orders", status_code=401
        )

    passed = [flood.filter(unauthorized()) for _ in range(50)]
    error = record(
        "django.request", logging.ERROR, "Internal Server Error: %s", "/x", status_code=500
    )
    assert flood.filter(error) is True
    now[0] = 1001.1
    first_next_second = unauthorized()

    assert passed == [True] * 20 + [False] * 30
    assert flood.filter(first_next_second) is True
    assert first_next_second.getMessage() == (
        "Unauthorized: /api/v1/orders (and 30 more 4xx lines dropped before it)"
    )
    assert flood.filter(record("orders.polling", logging.WARNING, "bank down")) is True


def test_a_routine_404_prints_nothing_and_a_real_error_prints_once_formatted(tmp_path):
    """Django's own console handler printed every django.request warning bare ("Not Found:
    /sandbox/bank/payments/PS...", an unpaid order's poll), past the filter, and every error
    twice. Here at the servers' level (INFO); the 500 is a database never migrated."""
    script = (
        "from django.test import Client\n"
        "client = Client(raise_request_exception=False)\n"
        "assert client.get('/sandbox/bank/pay/no-such-token').status_code == 404\n"
        "assert client.get('/no/such/page').status_code == 404\n"
        "assert client.get('/sandbox/bank/payments/PS1').status_code == 500\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", script],
        cwd=settings.BASE_DIR,
        env=embedded_env(tmp_path / "var", LOG_LEVEL="INFO"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "Not Found" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "Internal Server Error" in line]
    assert len(errors) == 1 and " ERROR django.request " in errors[0], result.stderr


def test_migrate_on_a_fresh_clone_creates_the_var_folder(tmp_path):
    var_dir = tmp_path / "fresh" / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--database", "default", "-v", "0"],
        cwd=settings.BASE_DIR,
        env={**env, "PAYSYS_VAR_DIR": str(var_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    assert (var_dir / "core.sqlite3").is_file()


@pytest.mark.django_db(databases="__all__")
def test_api_docs_are_served_from_the_package_not_a_cdn():
    page = Client().get("/api/docs/").content.decode()

    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert finders.find(
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    )  # shipped in the package


def test_admin_names_every_model_in_english_plural():
    """Django's default plural adds an "s": admin listed "Merchant deliverys" and "Branchs"."""
    naive = [
        f"{model._meta.label}: {model._meta.verbose_name_plural}"
        for model in apps.get_models()
        if str(model._meta.verbose_name_plural) == f"{model._meta.verbose_name}s"
        and re.search(r"([^aeiou]y|s|x|z|ch|sh)$", str(model._meta.verbose_name))
    ]

    assert naive == []
