"""The course's scenarios (``manage.py scenario``), run for real as a reader runs them: the command
starts a stack of its own (on this test run's backend: a fresh ``var/`` on SQLite, or fresh
MariaDB schemas and this suite's own Redis database), injects each fault through the stack's
control socket and checks every row. CI runs the happy path and one service down; the nine, the refunds and
the seeded chaos run are slow (``PAYSYS_SLOW_TESTS=1``)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.core.test_runstack import embedded_env, free_port
from tests.faults import brokers
from tests.faults.conftest import FAULT_REDIS_DB

slow = pytest.mark.skipif(
    os.environ.get("PAYSYS_SLOW_TESTS") != "1", reason="slow: set PAYSYS_SLOW_TESTS=1"
)
SERVICES = sorted(set(settings.SERVICE_ALIASES.values()))


@pytest.fixture(autouse=True)
def require_full_stack():
    """Unlike the other fault tests, the scenarios run on the embedded default too (its faults are a
    locked SQLite file and an emptied broker folder)."""


def full_stack() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("mysql")


@pytest.fixture
def scenario_env(tmp_path):
    """The environment of a ``manage.py scenario`` that starts its own stack on a free port."""
    port = free_port()
    base = {"PORT": str(port), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    if not full_stack():
        yield embedded_env(tmp_path / "var", **base)
        return
    import MySQLdb

    db = settings.DATABASES["default"]
    prefix = db["NAME"].removeprefix("test_").removesuffix("_core") + "_scn"
    server = MySQLdb.connect(
        host=db.get("HOST") or "127.0.0.1",
        port=int(db.get("PORT") or 3306),
        user=db.get("USER") or "root",
        password=db.get("PASSWORD") or "",
    )
    for service in SERVICES:  # fresh schemas: reconcile --strict judges this run alone
        server.cursor().execute(f"DROP DATABASE IF EXISTS `{prefix}_{service}`")
    server.close()
    # the broker's own place (a Redis database or a RabbitMQ virtual host), emptied
    broker = brokers.isolated(settings.CELERY_BROKER_URL, FAULT_REDIS_DB)
    brokers.lose_everything(broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL_")}
    env.update(
        base,
        PAYSYS_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
        CELERY_BROKER_URL=broker,
        # Redis is the cache too; RabbitMQ holds none, so the stack's processes share var/cache
        **({} if brokers.is_amqp(broker) else {"CACHE_URL": broker}),
        DATABASE_URL=f"mysql://{db.get('USER') or 'root'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 3306}/{prefix}",
    )
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    env.setdefault("BANK_SHARED_SECRET", secrets.token_urlsafe(48))
    yield env
    brokers.lose_everything(broker)


def run_scenarios(env: dict, *args: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "scenario", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout + result.stderr
    stack_log = Path(env["PAYSYS_VAR_DIR"]) / "demo-stack.log"
    assert result.returncode == 0, (
        f"{out[-6000:]}\n--- stack log ---\n{stack_log.read_text()[-4000:] if stack_log.exists() else ''}"
    )
    assert "compressed schedules, for the scenarios only" in out
    assert "stopped the stack the demo started" in out  # nothing left running
    return out


def row(out: str, title: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(title + "  "))
    return re.split(r"\s{2,}", line.strip())


def assert_clean(out: str, title: str) -> list[str]:
    cells = row(out, title)
    _, payments, completed, lost, doubled, _seconds, verdict, _pattern = cells
    assert int(payments) > 0 and completed == payments, cells
    assert (lost, doubled, verdict) == ("0", "0", "clean"), cells
    return cells


def test_happy_path_and_the_fund_account_service_down(scenario_env):
    """The course's "account service down": worker stopped and database cut while payments go on;
    the funds tries fail and are cancelled, and once funds is back a later attempt confirms each
    payment exactly once, the merchant's balance exact and reconcile --strict clean."""
    out = run_scenarios(scenario_env, "happy", "funds-down", timeout=240)

    assert_clean(out, "1 happy path")
    pattern = assert_clean(out, "3 fund-account service down")[-1]
    assert re.search(r"\d+ tries? cancelled, attempt [2-9]\d* confirmed", pattern), pattern
    assert "funds stopped" in out and "funds's database" in out and "funds started" in out


@slow
def test_all_nine_scenarios(scenario_env):
    out = run_scenarios(scenario_env, "all", timeout=900)

    for title in (
        "1 happy path",
        "2 orders service down",
        "3 fund-account service down",
        "4 points-account service down",
        "5 accounting service down",
        "6 merchant server down, then back",
        "7 broker loses its messages",
        "8 bank notifies duplicated, delayed, reordered, lost",
        "9 refunds while the fund-account service is down",
    ):
        assert_clean(out, title)
    assert "notifications retried" in row(out, "6 merchant server down, then back")[-1]
    assert (
        "found by polling" in row(out, "8 bank notifies duplicated, delayed, reordered, lost")[-1]
    )


@slow
def test_refunds_while_the_fund_account_service_is_down(scenario_env):
    """Three refunds (half, whole, half; bank and wallet) asked while funds is cut: refused (503),
    asked again once it is back, each SUCCEEDED once, the balance exact, reconcile --strict clean."""
    out = run_scenarios(scenario_env, "refund", timeout=420)

    pattern = assert_clean(out, "9 refunds while the fund-account service is down")[-1]
    assert pattern.startswith("3 of 3 refunds SUCCEEDED (1 whole, 2 partial)"), pattern
    assert re.search(r"[1-9]\d* refund requests? refused while funds was down", pattern), pattern
    assert "funds stopped" in out and "funds started" in out


def test_the_scenario_list_names_the_refund_scenario():
    result = subprocess.run(
        [sys.executable, "manage.py", "scenario", "--list"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^refund\s+9 refunds while the fund-account service is down$", result.stdout, re.MULTILINE
    ), result.stdout


@slow
def test_seeded_chaos_run(scenario_env):
    """300 payments while workers and beat are SIGKILLed at random: every payment completes once,
    the merchant's balance is exact and reconcile --strict (the oracle) is clean."""
    out = run_scenarios(scenario_env, "--chaos", "--seed", "3", "--payments", "300", timeout=900)

    cells = assert_clean(out, "chaos seed 3")
    assert cells[1] == "300"
    assert int(re.match(r"(\d+) SIGKILLs", cells[-1]).group(1)) > 0
