"""Real faults a running stack can be given, for the course's scenarios and for tests: a TCP proxy
in front of a service's database that can be closed (a network partition, a stopped database),
and, on the embedded default, a lock on a service's SQLite file that no reader or writer gets past.

Nothing here is called by business code: a fault is the world changing under the services.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import threading
import time
from pathlib import Path

# SQLite's WAL shared-memory locks (the -shm file's bytes 120..127: the writer lock, the
# checkpointer, recovery and the five read marks). Whoever holds them all exclusively keeps every
# other connection out: reads and writes get SQLITE_BUSY/PROTOCOL after their busy timeout.
WAL_LOCK_OFFSET, WAL_LOCK_BYTES = 120, 8


def mysql_url(db: dict, *, port: int | None = None) -> str:
    """A Django MySQL database setting as a ``DATABASE_URL_<SERVICE>`` (optionally another port)."""
    host = db.get("HOST") or "127.0.0.1"
    user = db.get("USER") or "root"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"mysql://{user}{password}@{host}:{port or db.get('PORT') or 3306}/{db['NAME']}"


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

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    # the face every fault shows a stack's controller (paysys.core.stack.StackControl)
    @property
    def is_cut(self) -> bool:
        return not self.is_open

    def cut(self) -> None:
        if self.is_open:
            self.close()

    def restore(self) -> None:
        if not self.is_open:
            self.open()

    def describe(self) -> str:
        return f"proxy :{self.port} {'closed' if self.is_cut else 'open'}"

    def open(self) -> TcpProxy:
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


class SqliteLock:
    """Hold every WAL lock of one SQLite database, so no other process reads or writes it.

    POSIX locks belong to the process and go when it closes *any* descriptor of the file: the
    holder opens the ``-shm`` file once, here, and this process must not open that database
    otherwise. ``release()`` (or the holder's death) gives the database back."""

    def __init__(self, path: str | Path):
        self.path = Path(str(path) + "-shm")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 15.0) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:  # readers hold a read mark only for a transaction: retry until none does
                fcntl.lockf(
                    fd, fcntl.LOCK_EX | fcntl.LOCK_NB, WAL_LOCK_BYTES, WAL_LOCK_OFFSET, os.SEEK_SET
                )
                break
            except OSError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(
                        f"{self.path} stayed in use for {timeout:.0f} s; not locked"
                    ) from None
                time.sleep(0.01)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None

    @property
    def is_cut(self) -> bool:
        return self.held

    def cut(self) -> None:
        if not self.held:
            self.acquire()

    def restore(self) -> None:
        self.release()

    def describe(self) -> str:
        return f"{self.path.name[: -len('-shm')]} {'locked' if self.held else 'open'}"
