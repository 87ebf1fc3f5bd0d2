"""Steering a running stack (``manage.py stack ...`` over ``var/stack.sock``): a stopped process
stays stopped until started, a killed one is restarted, a cut database answers no other process
until restored. Real processes and a real SQLite file; the supervisor runs on a thread here."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from paysys.core.faults import SqliteLock, TcpProxy
from paysys.core.stack import (
    ProcessSpec,
    StackControl,
    StackLock,
    Supervisor,
    control_request,
    not_ours,
)
from tests.core.test_runstack import alive
from tests.faults.harness import wait_for
from tests.notifications.receiver import Behaviour, Receiver


@pytest.fixture
def wal_db(tmp_path):
    path = tmp_path / "funds.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (a INTEGER)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    db.close()
    return path


@pytest.fixture
def running(tmp_path, wal_db, settings):
    """A supervisor of two sleeping processes, its control socket in this test's var/."""
    settings.VAR_DIR = tmp_path
    specs = [ProcessSpec("funds", "sleep 300"), ProcessSpec("points", "sleep 300")]
    supervisor = Supervisor(specs, env=dict(os.environ), cwd=tmp_path, write=lambda line: None)
    control = StackControl(supervisor, tmp_path / "stack.sock", {"funds": SqliteLock(wal_db)})
    control.start()
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    wait_for(lambda: all(c.process for c in supervisor.children), what="both processes to start")
    yield supervisor
    supervisor.stopping.set()
    thread.join(timeout=30)
    control.close()


def stack(*args: str) -> str:
    out = StringIO()
    call_command("stack", *args, stdout=out)
    return out.getvalue()


def test_a_stopped_process_stays_stopped_until_started(running):
    first = running.child("funds").process.pid

    assert "funds stopped" in stack("stop", "funds")

    assert not alive(first)
    # the supervisor restarts an exited process after 1 s; a stopped one it leaves alone
    with pytest.raises(AssertionError):
        wait_for(
            lambda: running.child("funds").process.poll() is None, timeout=2.5, what="a restart"
        )
    assert (
        "funds" in stack("status")
        and "stopped" in stack("status").split("funds", 1)[1].splitlines()[0]
    )
    assert alive(running.child("points").process.pid)  # the rest runs on

    assert "funds started" in stack("start", "funds")
    second = running.child("funds").process.pid
    assert second != first
    time.sleep(1)  # it keeps running once the control request that started it is answered
    assert running.child("funds").process.pid == second and alive(second)


def test_a_killed_process_is_restarted(running):
    first = running.child("points").process.pid

    assert "points killed" in stack("kill", "points")

    wait_for(
        lambda: (
            running.child("points").process.pid != first
            and alive(running.child("points").process.pid)
        ),
        timeout=10,
        what="points to be restarted",
    )
    assert not alive(first)


def test_a_cut_database_answers_no_other_process_until_restored(running, wal_db):
    reader = [
        sys.executable,
        "-c",
        f"import sqlite3; print(sqlite3.connect({str(wal_db)!r}, timeout=30)"
        ".execute('SELECT count(*) FROM t').fetchone()[0])",
    ]
    assert "locked" in stack("cut", "funds")
    assert "CUT" in stack("status")

    blocked = subprocess.Popen(reader, stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        blocked.wait(timeout=1.5)  # the file is there, but nobody gets a read lock

    assert "open" in stack("restore", "funds")
    assert blocked.communicate(timeout=15)[0].strip() == "1"  # the waiting reader goes through
    assert subprocess.run(reader, capture_output=True, text=True, timeout=15).stdout.strip() == "1"


def test_a_closed_proxy_refuses_connections_and_restore_reopens_it():
    server = socket.create_server(("127.0.0.1", 0))
    proxy = TcpProxy("127.0.0.1", server.getsockname()[1]).open()
    try:
        proxy.cut()
        assert proxy.is_cut and "closed" in proxy.describe()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).recv(1)
        proxy.restore()
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
        assert not proxy.is_cut
    finally:
        proxy.close()
        server.close()


def test_unknown_names_and_missing_stacks_are_refused_with_what_to_do(running, tmp_path, settings):
    with pytest.raises(CommandError, match="no process 'nope'.*there: funds, points"):
        stack("stop", "nope")
    with pytest.raises(
        CommandError, match="cannot cut 'points'; services this stack can cut: funds"
    ):
        stack("cut", "points")
    with pytest.raises(CommandError, match="needs a name"):
        stack("kill")
    assert control_request(tmp_path / "stack.sock", "reboot")["ok"] is False

    settings.VAR_DIR = tmp_path / "elsewhere"
    with pytest.raises(CommandError, match="no running stack answers.*make run"):
        stack("status")


def test_the_control_socket_is_its_owners_alone(running, tmp_path):
    import stat

    assert stat.S_IMODE(os.stat(tmp_path / "stack.sock").st_mode) == 0o600


def test_the_demo_refuses_before_writing_anything_where_the_bank_simulator_is_off(settings, db):
    from django.core.management.base import CommandError

    from paysys.core.models import Merchant

    settings.SANDBOX_ENABLED = False
    with pytest.raises(CommandError, match="bank simulator"):
        call_command("demo")
    assert not Merchant.objects.exists()


def test_the_scenarios_refuse_where_the_bank_simulator_is_off(settings):
    from django.core.management.base import CommandError

    settings.SANDBOX_ENABLED = False
    with pytest.raises(CommandError, match="bank simulator"):
        call_command("scenario", "happy")


@pytest.mark.django_db(databases="__all__")
def test_the_demo_on_another_checkouts_stack_says_so_and_how_to_start_its_own(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    # another checkout's stack: healthy, but it knows none of this checkout's merchants
    unknown_key = Behaviour(401, {"Content-Type": "application/json"}, '{"error": {"code": "x"}}')
    server = Receiver(default=unknown_key).start()
    server.answer("/healthz", Behaviour(200, {"Content-Type": "application/json"}, "{}"))
    base = server.url("")
    try:
        with pytest.raises(CommandError) as refused:
            call_command("demo", base_url=base, stdout=StringIO())
        lock = StackLock(tmp_path)  # this checkout's own stack, elsewhere
        lock.acquire({"base_url": "http://127.0.0.1:8300"})
        try:
            told = not_ours(base, tmp_path)
        finally:
            lock.release()
    finally:
        server.stop()

    assert f"the stack at {base} does not know this checkout's merchants" in str(refused.value)
    assert "no stack runs on this checkout's" in str(refused.value)
    assert "PORT=8001 make run" in str(refused.value)
    assert "runs at http://127.0.0.1:8300: use that address" in told
