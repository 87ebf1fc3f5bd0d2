"""Running the whole stack from the Procfile: a small supervisor, and the lock on ``var/``.

``manage.py runstack`` (what ``make run`` starts) runs every Procfile line as a child in its own
session and prefixes its output with its name, as honcho did, with two differences that matter
to a stack left running: a child that exits is started again (after 1, 2, 5, 10, then 30 s while
it keeps failing) instead of taking every other process down with it, and only one stack runs on
a ``var/`` folder at a time (``var/stack.lock`` says which one).

A running stack is steered over ``var/stack.sock`` (``manage.py stack ...``, :class:`StackControl`):
stop one process until it is started again, kill one (it is restarted), and cut a service off from
its database (the proxy in front of it closed, or its SQLite file locked) until it is restored.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

RESTART_DELAYS = (1, 2, 5, 10, 30)  # seconds before the 1st, 2nd, ... restart of a failing process
STABLE_AFTER = 60  # a process up this long counts as healthy again: its next restart is quick
STOP_TIMEOUT = 15  # seconds for every process to stop after SIGTERM, then SIGKILL
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@dataclass
class ProcessSpec:
    name: str
    command: str


def read_procfile(path: Path) -> list[ProcessSpec]:
    specs = []
    for line in path.read_text().splitlines():
        match = PROCFILE_LINE.match(line.strip())
        if match and not line.lstrip().startswith("#"):
            specs.append(ProcessSpec(match.group(1), match.group(2).strip()))
    return specs


# --- the lock: one stack per var/ folder ---------------------------------------------------------


class StackRunning(Exception):
    def __init__(self, holder: dict):
        self.holder = holder
        super().__init__(describe(holder))


def describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')}, {holder.get('base_url', '?')}, "
        f"started {holder.get('started_at', '?')}"
    )


class StackLock:
    """``var/stack.lock``, held (flock) for the stack's lifetime; the kernel drops it when the
    holder dies, so a crashed stack never leaves a stale lock behind. A start that is refused
    after taking it (a taken port, say) removes the file again if it made it (``discard``)."""

    def __init__(self, var_dir: Path):
        self.path = Path(var_dir) / "stack.lock"
        self._file: TextIO | None = None
        self._made = False

    def acquire(self, info: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd, made = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                try:
                    # not truncated: a refused second stack must not erase the first's details
                    fd, made = os.open(self.path, os.O_RDWR), False
                except FileNotFoundError:  # discarded in between: make it
                    continue
            f = os.fdopen(fd, "r+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse(f.read())
                f.close()
                raise StackRunning(holder) from None
            if _is_at(f, self.path):
                break
            f.close()  # a file a refused start discarded after this one opened it: take the new one
        f.truncate()
        f.write(json.dumps(info))
        f.flush()
        # kept open (not inherited by children: Python's files are non-inheritable)
        self._file, self._made = f, made

    def release(self, *, discard: bool = False) -> None:
        """Let go of the lock; ``discard``: and remove the file if this acquire made it (a start
        that was refused leaves nothing behind). Removed while still held: whoever opened it
        meanwhile sees it gone once it holds it, and takes a new one."""
        if self._file is not None:
            if discard and self._made:
                self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None

    def holder(self) -> dict | None:
        """The running stack's details, or None when no stack holds the lock."""
        try:
            f = open(self.path)
        except FileNotFoundError:
            return None
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _parse(f.read())
            return None


def not_ours(base: str, var_dir: Path) -> str:
    """What to say when the stack answering at ``base`` refuses this checkout's credentials (a
    401): it runs on other databases, most often another checkout's stack on the same port."""
    holder = StackLock(var_dir).holder()
    ours = (
        f"this checkout's stack ({var_dir}) runs at {holder['base_url']}: use that address"
        if holder and holder.get("base_url", base) != base
        else f"no stack runs on this checkout's {var_dir}: start one on a free port "
        "(PORT=8001 make run) and use that address (PORT=8001 ... here too)"
    )
    return (
        f"the stack at {base} does not know this checkout's merchants: it runs on other databases "
        f"(another checkout's stack on that port, or another DATABASE_URL); {ours}"
    )


def _is_at(f, path: Path) -> bool:
    """Whether the open file ``f`` is still the one at ``path`` (not removed or replaced)."""
    try:
        at = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (held.st_dev, held.st_ino) == (at.st_dev, at.st_ino)


def remove_if_empty(folders: tuple[Path, ...] | list[Path]) -> None:
    """Remove ``folders`` (outermost first, as made), innermost first, while each is empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): it and its parents stay
            return


def _parse(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what runserver sets too
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


# --- the supervisor --------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor is killed (Linux), so no process is orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    spec: ProcessSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # consecutive quick exits
    restart_at: float | None = None
    held: bool = False  # stopped by the operator: not restarted until started again
    threads: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    def __init__(
        self, specs: list[ProcessSpec], *, env: dict, cwd: Path, write: Callable[[str], None]
    ):
        self.children = [Child(spec) for spec in specs]
        self.env = env
        self.cwd = cwd
        self.write = write
        self.width = max(len(s.name) for s in specs) + 2
        self.stopping = threading.Event()
        self.steering = (
            threading.RLock()
        )  # the watch loop and the operator's commands, one at a time
        self._lock = threading.Lock()

    def say(self, name: str, text: str) -> None:
        with self._lock:
            self.write(f"{datetime.now():%H:%M:%S} {name + '.1':<{self.width}} | {text}")

    def run(self) -> int:
        """Start everything; restart what exits; on SIGINT/SIGTERM/SIGHUP stop everything."""
        if threading.current_thread() is threading.main_thread():  # (a test may run it on a thread)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, lambda signum, frame: self.stopping.set())
        for child in self.children:
            self._start(child)
        while not self.stopping.wait(0.2):
            with self.steering:
                self._watch()
        self.stop()
        return 0

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.held:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None:
                continue
            if now - child.started_at >= STABLE_AFTER:
                child.failures = 0
            delay = RESTART_DELAYS[min(child.failures, len(RESTART_DELAYS) - 1)]
            child.failures += 1
            child.restart_at = now + delay
            self.say(
                child.spec.name,
                f"exited with code {code}; restarting in {delay} s (the rest of the stack runs on)",
            )

    # --- steering one process (StackControl calls these) --------------------------------------

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.spec.name == name:
                return child
        raise KeyError(
            f"no process {name!r} in this stack (there: {', '.join(c.spec.name for c in self.children)})"
        )

    def stop_one(self, name: str) -> str:
        """Stop one process (SIGTERM, then SIGKILL) and keep it stopped until ``start_one``."""
        with self.steering:
            child = self.child(name)
            child.held, child.restart_at = True, None
            process = child.process
        if process is None or process.poll() is not None:
            return f"{name} is stopped"
        _killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.say(
            name,
            f"stopped by the operator (code {process.returncode}); `manage.py stack start {name}` starts it",
        )
        return f"{name} stopped (pid {process.pid}); not restarted until `stack start {name}`"

    def start_one(self, name: str, timeout: float = 10.0) -> str:
        """Start a stopped process. The watch loop starts it, never the caller's thread: a child's
        PR_SET_PDEATHSIG follows the thread that forked it, and a control thread ends soon."""
        with self.steering:
            child = self.child(name)
            child.held = False
            before = child.process
            if before is not None and before.poll() is None:
                return f"{name} already runs (pid {before.pid})"
            child.failures, child.restart_at = 0, time.monotonic()
        deadline = time.monotonic() + timeout
        while child.process is before and time.monotonic() < deadline:
            time.sleep(0.05)
        if child.process is before:
            raise TimeoutError(f"{name} did not start within {timeout:.0f} s")
        return f"{name} started (pid {child.process.pid})"

    def kill_one(self, name: str) -> str:
        """SIGKILL one process, as a crash would; the supervisor restarts it like any exit."""
        with self.steering:
            child = self.child(name)
            if child.held or child.process is None or child.process.poll() is not None:
                return f"{name} is not running; nothing killed"
            child.failures = 0  # an operator's kill is not the process failing: restarted after 1 s
            _killpg(child.process.pid, signal.SIGKILL)
            return f"{name} killed (pid {child.process.pid}); restarted in {RESTART_DELAYS[0]} s"

    def status(self) -> list[dict]:
        with self.steering:
            rows = []
            for child in self.children:
                running = child.process is not None and child.process.poll() is None
                state = "running" if running else "stopped" if child.held else "restarting"
                rows.append(
                    {
                        "name": child.spec.name,
                        "state": state,
                        "pid": child.process.pid if running else None,
                        "up_seconds": round(time.monotonic() - child.started_at)
                        if running
                        else None,
                    }
                )
            return rows

    def _start(self, child: Child) -> None:
        restart = child.process is not None
        child.process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {child.spec.command}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor alone, which stops each in turn
            preexec_fn=_die_with_parent,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        reader = threading.Thread(
            target=self._relay_output, args=(child.spec.name, child.process), daemon=True
        )
        reader.start()
        child.threads.append(reader)
        self.say(
            child.spec.name, f"{'restarted' if restart else 'started'} (pid={child.process.pid})"
        )

    def _relay_output(self, name: str, process: subprocess.Popen) -> None:
        for raw in process.stdout:
            self.say(name, raw.decode(errors="replace").rstrip("\n"))

    def stop(self) -> None:
        self.say("system", "stopping every process")
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            _killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(
                    child.spec.name, f"still running {STOP_TIMEOUT} s after SIGTERM: killing it"
                )
                _killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=10)
        for child in self.children:
            for t in child.threads:
                t.join(timeout=2)  # the last lines of output
            self.say(
                child.spec.name,
                f"stopped (code {child.process.returncode})" if child.process else "stopped",
            )


# --- steering a running stack: var/stack.sock ----------------------------------------------------


class StackControl:
    """A Unix socket next to the stack lock; one JSON request per connection, one JSON answer:
    ``{"op": "status"|"stop"|"start"|"kill"|"cut"|"restore", "name": ...}``."""

    def __init__(self, supervisor: Supervisor, path: Path, cuts: dict):
        """``cuts``: service -> its database's fault (a ``TcpProxy`` or a ``SqliteLock``)."""
        self.supervisor = supervisor
        self.path = Path(path)
        self.cuts = cuts
        self._server: socket.socket | None = None

    def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a crashed stack's socket (we hold the stack lock)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        os.chmod(
            self.path, 0o600
        )  # the stack's owner only, whatever the umask: it stops and kills services
        server.listen(8)
        self._server = server
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)
        for fault in self.cuts.values():  # a stack that stops gives every database back
            fault.restore()

    def _serve(self) -> None:
        while self._server is not None:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = json.loads(conn.makefile("rb").readline() or b"{}")
                answer = {"ok": True, **self.handle(request.get("op"), request.get("name"))}
            except (KeyError, ValueError, TimeoutError, OSError) as exc:
                answer = {"ok": False, "error": exc.args[0] if exc.args else str(exc)}
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                pass

    def handle(self, op: str | None, name: str | None) -> dict:
        sup = self.supervisor
        if op == "status":
            return {
                "processes": sup.status(),
                "services": [
                    {"service": s, "cut": f.is_cut, "database": f.describe()}
                    for s, f in self.cuts.items()
                ],
            }
        if op in ("stop", "start", "kill"):
            action = {"stop": sup.stop_one, "start": sup.start_one, "kill": sup.kill_one}[op]
            return {"message": action(str(name))}
        if op in ("cut", "restore"):
            if name not in self.cuts:
                known = (
                    ", ".join(self.cuts)
                    or "none: this stack runs without database proxies (PAYSYS_DB_PROXY=1)"
                )
                raise KeyError(f"cannot cut {name!r}; services this stack can cut: {known}")
            fault = self.cuts[name]
            fault.cut() if op == "cut" else fault.restore()
            sup.say("system", f"{name}'s database: {fault.describe()} ({op} by the operator)")
            return {"message": f"{name}'s database: {fault.describe()}"}
        raise ValueError(f"unknown operation {op!r}: status, stop, start, kill, cut, restore")


def control_request(path: Path, op: str, name: str | None = None, *, timeout: float = 60.0) -> dict:
    """Ask a running stack (its ``var/stack.sock``); raises OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(json.dumps({"op": op, "name": name}).encode() + b"\n")
        return json.loads(
            client.makefile("rb").readline() or b'{"ok": false, "error": "no answer"}'
        )


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)  # the group: a prefork worker's pool processes too
    except (ProcessLookupError, PermissionError):
        pass


def started_at_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def venv_path(env_path: str) -> str:
    """PATH with this interpreter's bin first: the Procfile's ``python`` and ``celery`` are the venv's."""
    return str(Path(sys.executable).parent) + os.pathsep + env_path
