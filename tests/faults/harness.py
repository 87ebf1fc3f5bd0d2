"""Real faults for tests: Celery worker processes that can be killed, and a TCP proxy that a
test closes to cut a service off from its database. Nothing here touches business code, and
the machine's shared MariaDB and Redis are never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from paysys.core.faults import TcpProxy, mysql_url  # noqa: F401 (TcpProxy: the tests' import path)

ROOT = Path(settings.BASE_DIR)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def service_env(
    broker_url: str, *, ports: dict[str, int] | None = None, **extra: str
) -> dict[str, str]:
    """Environment for a worker subprocess: every alias on this test run's databases (optionally
    through a proxy port), the test broker, and ``extra`` settings."""
    env = dict(os.environ)
    for alias, db in settings.DATABASES.items():
        service = settings.SERVICE_ALIASES[alias]
        env[f"DATABASE_URL_{service.upper()}"] = mysql_url(db, port=(ports or {}).get(alias))
    env["CELERY_BROKER_URL"] = broker_url
    # one cache for all processes, as in production (the relay's kick coalescing lives there)
    location = settings.CACHES["default"]["LOCATION"]
    env["CACHE_URL"] = location if location.startswith("redis") else f"file://{location}"
    env.update(extra)
    return env


class Worker:
    """``celery -A paysys worker -Q <queues>`` as a real process (prefork, one child)."""

    def __init__(self, name: str, queues: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.queues = queues
        self.env = env
        self.log_path = log_dir / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "paysys",
                "worker",
                "-Q",
                self.queues,
                "-n",
                f"{self.name}-{os.getpid()}@%h",
                "--concurrency=1",
                "--pool=prefork",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        wait_for(
            lambda: self._ready(offset),
            timeout=60,
            what=f"worker {self.name} to be ready (log: {self.log_path})",
        )
        return self

    def _ready(self, offset: int) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}"
            )
        return (
            b" ready." in self.log_path.read_bytes()[offset:]
            or b"ready." in self.log_path.read_bytes()
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def child_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def kill_child(self) -> int:
        """SIGKILL the pool process that executes tasks (the worker itself survives)."""
        pid = wait_for(self.child_pids, what=f"a pool process of worker {self.name}")[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
