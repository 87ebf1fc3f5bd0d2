"""Real faults for tests: Celery worker processes that can be killed, and a TCP proxy that a
test closes to cut a service off from its database. Nothing here touches business code, and
the machine's shared MariaDB and Redis are never stopped."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def mysql_url(db: dict, *, port: int | None = None) -> str:
    host = db.get("HOST") or "127.0.0.1"
    user = db.get("USER") or "root"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"mysql://{user}{password}@{host}:{port or db.get('PORT') or 3306}/{db['NAME']}"


def with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def service_env(broker_url: str, *, ports: dict[str, int] | None = None, **extra: str) -> dict[str, str]:
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

    def start(self) -> "Worker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "paysys", "worker", "-Q", self.queues,
                "-n", f"{self.name}-{os.getpid()}@%h", "--concurrency=1", "--pool=prefork",
                "--without-gossip", "--without-mingle", "--loglevel=INFO",
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        wait_for(lambda: self._ready(offset), timeout=60, what=f"worker {self.name} to be ready (log: {self.log_path})")
        return self

    def _ready(self, offset: int) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return b" ready." in self.log_path.read_bytes()[offset:] or b"ready." in self.log_path.read_bytes()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def child_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
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


class TcpProxy:
    """A TCP forwarder to a database. ``close()`` refuses new connections and cuts live ones,
    as a network partition or a stopped database would; ``open()`` restores the path."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def open(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone would leave it listening
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update({client, upstream})
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                if self._stopping.is_set() and not ready:
                    if a.fileno() < 0 or b.fileno() < 0:
                        return
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
