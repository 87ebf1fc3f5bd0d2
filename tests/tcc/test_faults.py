"""The TCC framework under real faults (MariaDB + Redis, real worker and initiator processes).

Participants are the test ones (tests/tcc/participants.py), loaded into the workers with
``celery worker --include``. Initiators that must die or see a different network run as their
own process (``initiate``); the crash points are injected by the test script, never by flags in
the framework.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from django.conf import settings

from paysys import tcc
from paysys.tcc import phase_two, recovery
from paysys.tcc.models import GlobalTransaction, TransactionBranch
from tests.faults import brokers
from tests.faults.conftest import broker_url, db_proxy, require_full_stack  # noqa: F401 - fixtures
from tests.faults.harness import ROOT, Worker, service_env, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.django_db(databases="__all__", transaction=True)]

Status = GlobalTransaction.Status
FAST = {"TCC_TRY_TIMEOUT": "2", "TCC_RETRY_SCHEDULE": "1,1,1"}


class ParticipantWorker(Worker):
    """A real worker that also imports the test participants."""

    def start(self) -> ParticipantWorker:
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
                "--include",
                "tests.tcc.participants",
                "-n",
                f"{self.name}-{uuid.uuid4().hex[:6]}@%h",
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
        wait_for(
            lambda: self._ready(0),
            timeout=60,
            what=f"worker {self.name} to be ready (log: {self.log_path})",
        )
        return self


@pytest.fixture
def workers(broker_url, tmp_path):  # noqa: F811
    started: list[Worker] = []

    def start(
        queues: str, *, ports: dict[str, int] | None = None, name: str | None = None
    ) -> Worker:
        worker = ParticipantWorker(
            name or queues.replace(",", "-"),
            queues,
            service_env(broker_url, ports=ports, **FAST),
            tmp_path,
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def fast(settings, ledgers):
    settings.TCC_TRY_TIMEOUT = 2
    settings.TCC_RETRY_SCHEDULE = [1, 1, 1]
    return ledgers


INITIATOR = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import django
    django.setup()
    from paysys import tcc
    from paysys.tcc import coordinator, phase_two
    import tests.tcc.participants

    crash, key, branches = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if crash == "after_decision":  # the decision is committed; nothing of phase two ran or was sent
        coordinator._run_phase_two = die
    elif crash == "between_tries":  # branch 1 tried, then the process dies
        real_tries, positions = coordinator._try_batches, []

        def tries(alias, groups):  # branch position 1 tries, then the process dies
            positions.append(alias)
            return real_tries(alias, groups) if len(positions) == 1 else die()

        coordinator._try_batches = tries
    started = time.monotonic()
    try:
        outcome = tcc.run("complete_order", business_key=key, branches=[tcc.Branch(a, p) for a, p in branches])
        result = {"xid": outcome.xid, "status": outcome.status}
    except tcc.TryFailed as exc:
        result = {"xid": exc.xid, "failed": exc.action, "cause": type(exc.cause).__name__, "transient": exc.is_transient}
    result["seconds"] = time.monotonic() - started
    phase_two.flush_dispatch()
    print(json.dumps(result))
    """
)


def initiate(
    broker: str, key: str, branches: list[tuple[str, dict]], *, crash: str = "", ports=None
):
    """Run tcc.run in a process of its own; returns its JSON result, or None if it was killed."""
    env = service_env(broker, ports=ports, DJANGO_SETTINGS_MODULE="paysys.settings", **FAST)
    proc = subprocess.run(
        [sys.executable, "-c", INITIATOR, crash, key, json.dumps(branches)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == -9:
        return None
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def three(**extra) -> list[tuple[str, dict]]:
    return [
        ("test.orders", {"amount": 1, **extra.get("orders", {})}),
        ("test.funds", {"amount": 994, **extra.get("funds", {})}),
        ("test.points", {"amount": 10, **extra.get("points", {})}),
    ]


def new_key() -> str:
    return f"fault:{uuid.uuid4().hex[:12]}"


def gtx_of(key: str, attempt: int = 1) -> GlobalTransaction:
    return GlobalTransaction.objects.get(business_key=key, attempt=attempt)


def status_is(key: str, status: str, attempt: int = 1):
    return lambda: gtx_of(key, attempt).status == status


def recover_until(predicate, *, what: str, timeout: float = 40):
    """Run recovery passes (as beat would) until ``predicate`` holds."""

    def step():
        recovery.recover_tcc()
        return predicate()

    return wait_for(step, timeout=timeout, interval=0.5, what=what)


class BlackHole:
    """A database address that accepts connections and never answers (a hung server)."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self):
        self._listener.close()
        for conn in self._held:
            conn.close()


def test_a_try_whose_database_does_not_answer_fails_within_the_timeout_and_is_cancelled(
    broker_url, workers, fast
):
    workers("orders,funds,points")
    hole = BlackHole()
    key = new_key()
    try:
        result = initiate(broker_url, key, three(), ports={"funds": hole.port})
    finally:
        hole.close()

    assert (
        result["failed"] == "test.funds"
        and result["cause"] == "TimeoutError"
        and result["transient"]
    )
    assert result["seconds"] < 2 + 1.5  # never a hang
    wait_for(status_is(key, Status.CANCELLED), what="the cancels to run")
    xid = result["xid"]
    assert fast("orders", xid) == [("test.orders", "try", 1), ("test.orders", "cancel", 1)]
    assert fast("funds", xid) == [] and fast("points", xid) == []

    # funds answers again: the next attempt (a redelivered message) completes, once
    again = initiate(broker_url, key, three())
    assert again["status"] == Status.CONFIRMING and again["xid"] != xid
    wait_for(status_is(key, Status.CONFIRMED, attempt=2), what="the second attempt to confirm")
    assert fast("funds", again["xid"]) == [
        ("test.funds", "try", 994),
        ("test.funds", "confirm", 994),
    ]


def test_a_try_whose_database_is_cut_off_fails_fast_and_nothing_changes(
    broker_url, workers, fast, db_proxy
):  # noqa: F811
    workers("orders,funds,points")
    db_proxy.close()
    key = new_key()
    result = initiate(broker_url, key, three(), ports={"points": db_proxy.port})
    assert (
        result["failed"] == "test.points"
        and result["transient"]
        and result["cause"] == "OperationalError"
    )
    wait_for(status_is(key, Status.CANCELLED), what="the cancels to run")
    xid = result["xid"]
    assert fast("funds", xid) == [("test.funds", "try", 994), ("test.funds", "cancel", 994)]
    assert fast("points", xid) == []


def test_coordinator_killed_between_decision_and_phase_two_is_finished_by_recovery(
    broker_url, workers, fast
):
    workers("orders,funds,points")
    key = new_key()
    assert initiate(broker_url, key, three(), crash="after_decision") is None  # SIGKILLed
    gtx = gtx_of(key)
    assert gtx.status == Status.CONFIRMING
    assert fast("funds", gtx.xid) == [("test.funds", "try", 994)]  # tried, not confirmed

    recover_until(status_is(key, Status.CONFIRMED), what="recovery to finish the transaction")
    for alias, action, amount in (
        ("orders", "test.orders", 1),
        ("funds", "test.funds", 994),
        ("points", "test.points", 10),
    ):
        assert fast(alias, gtx.xid) == [(action, "try", amount), (action, "confirm", amount)]


def test_coordinator_killed_between_tries_is_cancelled_after_its_deadline(
    broker_url, workers, fast, settings
):
    workers("orders,funds,points")
    key = new_key()
    assert initiate(broker_url, key, three(), crash="between_tries") is None
    gtx = gtx_of(key)
    assert gtx.status == Status.TRYING
    GlobalTransaction.objects.filter(pk=gtx.pk).update(
        next_retry_at=gtx.created_at
    )  # its deadline passed

    recover_until(status_is(key, Status.CANCELLED), what="recovery to cancel the transaction")
    assert fast("orders", gtx.xid) == [("test.orders", "try", 1), ("test.orders", "cancel", 1)]
    assert fast("funds", gtx.xid) == []


@pytest.mark.broker
def test_participant_worker_killed_during_phase_two_applies_the_confirm_once(
    broker_url, workers, fast
):
    workers("orders,points")
    funds = workers("funds")
    key = new_key()
    outcome = tcc.run(
        "complete_order",
        business_key=key,
        branches=[tcc.Branch(a, p) for a, p in three(funds={"confirm_sleep": 4})],
    )
    xid = outcome.xid
    phase_two.flush_dispatch()
    wait_for(
        lambda: f"test.funds.confirm of {xid} started" in funds.log(),
        what="funds to start its confirm",
    )
    time.sleep(1)
    funds.kill_child()  # mid-confirm: nothing of it committed
    assert fast("funds", xid) == [("test.funds", "try", 994)]

    # the requeued task, and recovery's resends, all arrive: the confirm is applied once
    recover_until(
        status_is(key, Status.CONFIRMED),
        what="the confirm to be applied after the kill",
        timeout=60,
    )
    time.sleep(5)  # any duplicate still on its way lands
    assert fast("funds", xid) == [("test.funds", "try", 994), ("test.funds", "confirm", 994)]


@pytest.mark.broker
def test_stopped_participant_worker_confirm_waits_and_applies_once_when_back(
    broker_url, workers, fast
):
    workers("orders,points")
    key = new_key()
    outcome = tcc.run(
        "complete_order", business_key=key, branches=[tcc.Branch(a, p) for a, p in three()]
    )
    phase_two.flush_dispatch()
    time.sleep(3)
    for _ in range(3):  # recovery resends while funds is down: the resends wait in its queue
        recovery.recover_tcc()
        time.sleep(1)
    gtx = gtx_of(key)
    assert gtx.status == Status.CONFIRMING
    assert gtx.branches.get(action="test.funds").status == TransactionBranch.Status.PENDING

    workers("funds")
    wait_for(status_is(key, Status.CONFIRMED), what="funds to confirm once back")
    time.sleep(2)
    assert fast("funds", outcome.xid) == [
        ("test.funds", "try", 994),
        ("test.funds", "confirm", 994),
    ]


@pytest.mark.broker
def test_broker_flushed_during_phase_two_recovery_resends(broker_url, workers, fast):
    key = new_key()
    outcome = tcc.run(
        "complete_order", business_key=key, branches=[tcc.Branch(a, p) for a, p in three()]
    )
    phase_two.flush_dispatch()
    brokers.lose_everything(broker_url)  # every queued confirm is gone
    workers("orders,funds,points")
    time.sleep(2)
    assert gtx_of(key).status == Status.CONFIRMING

    recover_until(status_is(key, Status.CONFIRMED), what="recovery to resend the lost confirms")
    assert fast("points", outcome.xid) == [
        ("test.points", "try", 10),
        ("test.points", "confirm", 10),
    ]


def test_phase_two_failing_past_the_retry_limit_flags_a_human_and_one_click_finishes_it(
    broker_url, workers, fast, db_proxy
):  # noqa: F811
    workers("orders,points")
    workers("funds", ports={"funds": db_proxy.port})
    db_proxy.close()  # the funds worker cannot reach its database
    key = new_key()
    outcome = tcc.run(
        "complete_order", business_key=key, branches=[tcc.Branch(a, p) for a, p in three()]
    )

    recover_until(
        lambda: gtx_of(key).needs_human,
        what="the transaction to be flagged for a human",
        timeout=60,
    )
    gtx = gtx_of(key)
    funds = gtx.branches.get(action="test.funds")
    assert gtx.status == Status.CONFIRMING and gtx.attempts == len(settings.TCC_RETRY_SCHEDULE)
    assert (
        funds.status == TransactionBranch.Status.PENDING
        and funds.attempts >= 1
        and "OperationalError" in funds.last_error
    )
    assert fast("funds", outcome.xid) == [("test.funds", "try", 994)]

    db_proxy.open()
    assert recovery.retry_now([gtx.pk]) == 1  # the admin's "Retry phase two now"
    wait_for(status_is(key, Status.CONFIRMED), what="the retried confirm")
    assert fast("funds", outcome.xid) == [
        ("test.funds", "try", 994),
        ("test.funds", "confirm", 994),
    ]
