"""``manage.py runstack`` (what ``make run`` starts): a dead worker is restarted while the rest
runs on, Ctrl-C stops everything, a second stack on the same ``var/`` and a taken port are
refused with a message. Real processes, in the embedded mode on a fresh ``PAYSYS_VAR_DIR``."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from paysys.core.management.commands.runstack import procfile_entries
from paysys.core.stack import StackLock, StackRunning

FULL_STACK_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")


def embedded_env(var_dir: Path, **extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in FULL_STACK_VARIABLES and not k.startswith("DATABASE_URL_")
    }
    env.update({"PAYSYS_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1", **extra})
    return env


def wait_for_log(
    log: Path, pattern: str, *, process: subprocess.Popen, timeout: float = 60, count: int = 1
) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.findall(pattern, text)
        if len(found) >= count:
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"no {count}x {pattern!r} (runstack {'exited ' + str(process.returncode) if process.poll() is not None else 'running'}):\n{text[-4000:]}"
            )
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def stack(tmp_path):
    log = tmp_path / "runstack.log"
    procs: list[subprocess.Popen] = []

    def start(*names: str, **env: str) -> subprocess.Popen:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "runstack", "--no-banner", *names],
                cwd=settings.BASE_DIR,
                env=embedded_env(tmp_path / "var", **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        procs.append(process)
        return process

    start.log = log
    yield start
    for process in procs:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    for pid in map(
        int, re.findall(r"started \(pid=(\d+)\)", log.read_text() if log.exists() else "")
    ):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_is_restarted_a_second_stack_is_refused_and_ctrl_c_stops_everything(
    stack, tmp_path
):
    # given: a stack running the orders worker from the Procfile
    runstack = stack("orders", PORT="9001")
    first_pid = int(
        wait_for_log(stack.log, r"orders\.1\s+\| started \(pid=(\d+)\)", process=runstack)[0]
    )
    wait_for_log(stack.log, r"orders@\S+ ready\.", process=runstack)
    assert "[queues]" not in stack.log.read_text()  # Celery's start-up banner (the Procfile's -q)

    # when: the worker dies (SIGKILL: no chance to clean up)
    os.kill(first_pid, signal.SIGKILL)

    # then: the stack is still up and the worker comes back, ready again
    wait_for_log(
        stack.log, r"orders\.1\s+\| exited with code -9; restarting in 1 s", process=runstack
    )
    second_pid = int(
        wait_for_log(stack.log, r"orders\.1\s+\| restarted \(pid=(\d+)\)", process=runstack)[0]
    )
    wait_for_log(stack.log, r"orders@\S+ ready\.", process=runstack, count=2)
    assert second_pid != first_pid and alive(second_pid) and runstack.poll() is None

    # and: a second stack on the same var/ refuses to start, naming the running one
    second = subprocess.run(
        [sys.executable, "manage.py", "runstack", "--no-banner", "orders"],
        cwd=settings.BASE_DIR,
        env=embedded_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "already runs" in second.stderr and f"pid {runstack.pid}" in second.stderr, second.stderr

    # and: a demo aimed where nothing answers does not start a second stack: it names the command
    demo = subprocess.run(
        [sys.executable, "manage.py", "demo", "--base-url", f"http://127.0.0.1:{free_port()}"],
        cwd=settings.BASE_DIR,
        env=embedded_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 1
    assert "already runs" in demo.stderr and "PORT=9001 make demo" in demo.stderr, demo.stderr

    # when: Ctrl-C
    os.kill(runstack.pid, signal.SIGINT)

    # then: everything stops and the lock is free again
    assert runstack.wait(timeout=30) == 0
    assert not alive(second_pid)
    assert "stopping every process" in stack.log.read_text()

    assert StackLock(tmp_path / "var").holder() is None


def test_a_taken_port_stops_runstack_with_a_message(stack, tmp_path):
    # given: something else listens on the port
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        # when: the stack starts its web server there, as `make run` does (migrating first)
        runstack = stack("--migrate", "web", PORT=str(port))

        # then: it stops at once, saying why and what to do, before touching a database
        assert runstack.wait(timeout=60) == 1
    text = stack.log.read_text()
    assert f"port {port} on 127.0.0.1 is taken by another process" in text
    assert f"PORT={port + 1} make run" in text
    assert "migrating" not in text


@pytest.mark.parametrize(
    "refusal",
    ["a public bind", "a taken port", "a settings check", "settings without secrets"],
)
def test_a_refused_start_leaves_nothing_it_made(tmp_path, refusal):
    """``PAYSYS_VAR_DIR=/x make run`` refused used to leave /x, /x/cache (Django's checks build
    the file cache) and /x/stack.lock (taken before the port was found taken) behind."""
    var_dir = tmp_path / "new" / "var"
    env = embedded_env(var_dir, PORT=str(free_port()), DJANGO_SETTINGS_MODULE="paysys.settings")
    with socket.socket() as other:
        if refusal == "a public bind":  # with the embedded default's public secrets
            env["BIND"] = "0.0.0.0"
            env.pop("SECRET_KEY", None)
            env.pop("BANK_SHARED_SECRET", None)
        elif refusal == "a taken port":
            other.bind(("127.0.0.1", 0))
            other.listen()
            env["PORT"] = str(other.getsockname()[1])
        elif refusal == "a settings check":
            env["RETENTION_DAYS"] = "0"
        else:
            env["DEBUG"] = "false"
            env.pop("SECRET_KEY", None)
        result = subprocess.run(
            [sys.executable, "manage.py", "runstack", "--no-banner", "--migrate", "web"],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 1, result.stderr
    assert not (tmp_path / "new").exists(), sorted(map(str, (tmp_path / "new").rglob("*")))


def test_a_refused_start_in_a_folder_in_use_adds_nothing_to_it(tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "core.sqlite3").write_bytes(b"")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        result = subprocess.run(
            [sys.executable, "manage.py", "runstack", "--no-banner", "--migrate", "web"],
            cwd=settings.BASE_DIR,
            env=embedded_env(var_dir, PORT=str(other.getsockname()[1])),
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1 and "is taken by another process" in result.stderr
    assert [p.name for p in var_dir.iterdir()] == ["core.sqlite3"]


def test_the_stack_lock_discards_only_a_file_it_made(tmp_path):
    made = StackLock(tmp_path)
    made.acquire({"pid": 1})
    made.release(discard=True)
    assert not (tmp_path / "stack.lock").exists()

    (tmp_path / "stack.lock").write_text("{}")  # a stack that ran here before
    found = StackLock(tmp_path)
    found.acquire({"pid": 2})
    found.release(discard=True)
    assert (tmp_path / "stack.lock").exists()


def test_a_lock_file_discarded_while_another_start_takes_it_is_taken_anew(tmp_path, monkeypatch):
    refused = StackLock(tmp_path)
    refused.acquire({"pid": 1})
    flock = fcntl.flock

    def discard_first(fd, operation):  # the refused start lets go between the other's open and lock
        refused.release(discard=True)
        return flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", discard_first)
    started = StackLock(tmp_path)
    started.acquire({"pid": 2})
    monkeypatch.undo()

    # then: the one lock file there is the one held: a third start sees the second running
    with pytest.raises(StackRunning) as third:
        StackLock(tmp_path).acquire({"pid": 3})
    assert third.value.holder == {"pid": 2}
    started.release()


def test_make_run_migrates_once_the_port_is_known_to_be_free(stack, tmp_path):
    runstack = stack("--migrate", "orders", PORT=str(free_port()))
    wait_for_log(stack.log, r"orders@\S+ ready\.", process=runstack)
    assert "all service databases are migrated" in stack.log.read_text()


@pytest.mark.django_db(databases="__all__")
def test_the_banner_prints_the_exact_demo_command(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.PORT, settings.PUBLIC_BASE_URL = 9001, "http://127.0.0.1:9001"
    out = StringIO()
    call_command("run_banner", stdout=out)
    assert "or, in another terminal: PORT=9001 make demo" in out.getvalue()


def test_the_bank_simulators_worker_runs_only_where_the_sandbox_is_on(settings):
    procfile = settings.BASE_DIR / "Procfile"

    settings.SANDBOX_ENABLED = True
    assert "sandbox" in {spec.name for spec in procfile_entries(procfile, [])}

    settings.SANDBOX_ENABLED = False
    names = {spec.name for spec in procfile_entries(procfile, [])}
    assert "sandbox" not in names and {"web", "orders", "beat"} <= names
    with pytest.raises(CommandError, match="only where the sandbox is on"):
        procfile_entries(procfile, ["web", "sandbox"])
    assert [spec.name for spec in procfile_entries(procfile, ["orders"])] == ["orders"]
