"""Worker liveness: a real worker process records its heartbeat; killed, it is reported dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings

from paysys.core import heartbeats

QUEUE = "maintenance"  # a queue no unit test sends to


def full_stack() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith(
        "mysql"
    ) and settings.CELERY_BROKER_URL.startswith("redis")


def worker_env() -> dict[str, str]:
    """The worker shares this process's cache: Redis (full stack) or the file cache under var/."""
    extra = {"WORKER_HEARTBEAT_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"}
    if full_stack():
        from tests.faults.harness import service_env, with_redis_db

        return service_env(
            with_redis_db(
                settings.CELERY_BROKER_URL, int(os.environ.get("PAYSYS_FAULT_REDIS_DB", "9"))
            ),
            **extra,
        )
    return {**os.environ, **extra}


def wait_for(predicate, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_worker_records_its_heartbeat_and_once_killed_is_reported_dead(settings, tmp_path):
    settings.WORKER_HEARTBEAT_SECONDS = 0.5  # dead after 1.5 s without a heartbeat
    heartbeats.forget([QUEUE])
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "paysys",
                "worker",
                "-Q",
                QUEUE,
                "-n",
                f"heartbeat-test-{os.getpid()}@%h",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            cwd=settings.BASE_DIR,
            env=worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: heartbeats.liveness([QUEUE])[QUEUE].alive or worker.poll() is not None,
            "the worker's heartbeat",
        )
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        first = heartbeats.liveness([QUEUE])[QUEUE].last_seen
        time.sleep(1.2)
        assert heartbeats.liveness([QUEUE])[QUEUE].last_seen > first  # it keeps beating

        os.killpg(worker.pid, signal.SIGKILL)  # no shutdown: it simply stops writing
        worker.wait(timeout=30)

        wait_for(
            lambda: not heartbeats.liveness([QUEUE])[QUEUE].alive,
            "the killed worker to be reported dead",
            timeout=10,
        )
        dead = heartbeats.liveness([QUEUE])[QUEUE]
        assert dead.last_seen is not None  # with when it was last seen
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        heartbeats.forget([QUEUE])
