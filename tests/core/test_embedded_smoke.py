"""Smoke test of the embedded default: no DATABASE_URL, no CELERY_BROKER_URL, nothing but files.

Real processes, as ``make run`` starts them: ``migrate_all``, ``serve`` (the web process), one Celery worker on
the filesystem broker, and the management commands a merchant is made with. Given a fresh
``PAYSYS_VAR_DIR``, when an order is created over HTTP and ``orders.close_expired_orders`` is sent
through the broker by ``celery call``, then the worker runs it and the (already expired) order
reads back CLOSED over HTTP.

It runs only in the embedded mode; ``.ci/run`` runs it explicitly with the full-stack variables
unset, so CI runs it too. When skipped, the reason shows in pytest's summary (``-ra``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

FULL_STACK_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason=(
        "embedded smoke test skipped: DATABASE_URL is set (full stack). It runs with the embedded default; "
        "CI runs it as `env -u DATABASE_URL -u CELERY_BROKER_URL make test ARGS=tests/core/test_embedded_smoke.py`"
    ),
)

STARTUP_TIMEOUT = 60.0
TASK_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Subprocesses in their own process groups, each logging to a file; all killed by ``stop_all``."""

    def __init__(self, env: dict, logs: Path):
        self.env = env
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen]] = []

    def run(
        self, name: str, *args: str, env: dict | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=settings.BASE_DIR,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
        return result

    def start(self, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=settings.BASE_DIR,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.started.append((name, process))
        return process

    def log(self, name: str, lines: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return f"--- last lines of {name}.log ---\n" + "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, process in self.started:
            assert process.poll() is None, (
                f"{name} exited with {process.returncode}\n{self.log(name)}"
            )

    def stop_all(self) -> None:
        for _, process in self.started:
            _killpg(process, signal.SIGTERM)
        for _, process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _killpg(process, signal.SIGKILL)
                process.wait(timeout=10)


def _killpg(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the group: a prefork worker's children too
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def processes(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in FULL_STACK_VARIABLES and not k.startswith("DATABASE_URL_")
    }
    env.update(
        PAYSYS_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="paysys.settings",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(env, logs)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(condition, timeout: float, what: str, processes: Processes):
    deadline = time.monotonic() + timeout
    while True:
        processes.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(processes.log(name) for name, _ in processes.started)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.2)


def test_embedded_default_serves_orders_and_runs_tasks_from_the_filesystem_broker(
    processes, tmp_path
):
    var_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web_env = {
        **processes.env,
        "PORT": str(port),
        "PUBLIC_BASE_URL": base,
        "ORDER_EXPIRY_SECONDS": "0",
    }
    http = requests.Session()
    http.trust_env = False  # loopback only: no proxy from the environment

    # given: every service database migrated into SQLite files under the fresh var dir
    processes.run("migrate_all", "manage.py", "migrate_all")
    assert sorted(p.name for p in var_dir.glob("*.sqlite3")) == sorted(
        f"{service}.sqlite3" for service in settings.SERVICE_ALIASES.values()
    )

    # and: the web server and one real worker, as `make run` starts them (orders expire at once)
    web = processes.start("web", "manage.py", "serve", env=web_env)
    processes.start(
        "worker",
        "-m",
        "celery",
        "-A",
        "paysys",
        "worker",
        "-Q",
        "orders,polling,sandbox,core",
        "--pool=solo",
        "-n",
        f"smoke-{port}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        env=web_env,
    )  # the same PUBLIC_BASE_URL: expiry asks this server's bank simulator
    merchant = json.loads(
        processes.run(
            "create_merchant",
            "manage.py",
            "create_merchant",
            "--name",
            "Smoke Shop",
            "--notify-url",
            f"{base}/sandbox/merchant/notify",
            "--json",
        ).stdout
    )
    payer = json.loads(
        processes.run(
            "create_payer",
            "manage.py",
            "create_payer",
            "--name",
            "Smoke Payer",
            "--merchant",
            str(merchant["merchant_id"]),
            "--json",
        ).stdout
    )
    http.headers["Authorization"] = f"Bearer {merchant['api_key']}"

    def healthz() -> tuple[int, dict] | None:
        try:
            response = http.get(f"{base}/healthz", timeout=2)
        except requests.ConnectionError:
            return None  # not listening yet
        return response.status_code, response.json()

    status, health = wait_for(healthz, STARTUP_TIMEOUT, "/healthz to answer", processes)
    assert status == 200, health
    assert set(health["databases"]) == set(settings.DATABASES)

    # when: a merchant creates an order over HTTP and reads it back
    body = {
        "merchant_order_no": "smoke-1",
        "amount": 1999,
        "currency": "CNY",
        "subject": "Smoke",
        "payer_id": payer["payer_id"],
    }
    created = http.post(f"{base}/api/v1/orders", json=body, timeout=10)
    assert created.status_code == 201, created.text
    fetched = http.get(f"{base}/api/v1/orders/smoke-1", timeout=10)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["out_trade_no"] == created.json()["out_trade_no"]
    assert fetched.json()["status"] == "CREATED"

    # and: a task is sent through the filesystem broker, as beat would send it
    processes.run(
        "celery_call", "-m", "celery", "-A", "paysys", "call", "orders.close_expired_orders"
    )
    assert (var_dir / "broker").is_dir(), (
        "the embedded broker keeps its messages under PAYSYS_VAR_DIR/broker"
    )

    # then: the worker runs it and the expired order reads back CLOSED
    def order_closed():
        return http.get(f"{base}/api/v1/orders/smoke-1", timeout=10).json()["status"] == "CLOSED"

    wait_for(order_closed, TASK_TIMEOUT, "the worker to close the expired order", processes)
    assert web.poll() is None
