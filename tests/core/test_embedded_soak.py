"""Soak test of the embedded broker (paysys/core/broker.py): 5,000 messages with every worker of
the stack running under ``runstack`` (and beat sending its schedules) while publishers in four
processes send to every queue at once. No worker exits, nothing is lost or delivered twice, no
file is set aside as undecodable. With kombu's own filesystem transport a worker dies within
seconds of such traffic (``JSONDecodeError`` in ``_get``) and messages are lost.

The stack runs in the embedded mode on a fresh ``PAYSYS_VAR_DIR`` whatever the environment, so
this runs on the full stack (CI's ``make test``) too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

from django.conf import settings

from paysys.core.stack import read_procfile
from tests.core.soak_tasks import RECORD_FILE
from tests.core.test_runstack import alive, embedded_env, wait_for_log

MESSAGES = 5000
PUBLISHERS = 4
DRAIN_TIMEOUT = 600
STALL_TIMEOUT = 30


def test_5000_messages_from_four_publisher_processes_reach_every_worker_once_and_no_worker_exits(
    tmp_path,
):
    var_dir, record_file, log = (
        tmp_path / "var",
        tmp_path / "received.txt",
        tmp_path / "runstack.log",
    )
    env = embedded_env(var_dir, **{RECORD_FILE: str(record_file)})
    subprocess.run(
        [sys.executable, "manage.py", "migrate_all"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )  # beat's tasks need the databases

    # given: the stack's workers (each also knowing the soak task) and beat, under runstack
    procfile = tmp_path / "Procfile"
    lines = []
    for spec in read_procfile(settings.BASE_DIR / "Procfile"):
        if spec.name == "web":
            continue
        command = spec.command + (
            " --include tests.core.soak_tasks" if " worker " in spec.command else ""
        )
        lines.append(f"{spec.name}: {command}")
    procfile.write_text("\n".join(lines) + "\n")
    workers = [line.split(":")[0] for line in lines if " worker " in line]
    with open(log, "wb") as out:
        runstack = subprocess.Popen(
            [sys.executable, "manage.py", "runstack", "--no-banner", "-f", str(procfile)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for_log(log, r"@\S+ ready\.", process=runstack, count=len(workers), timeout=120)

        # when: four publisher processes send 5,000 messages round-robin over every queue at once
        per_publisher = MESSAGES // PUBLISHERS
        publishers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.core.soak_tasks",
                    str(i * per_publisher),
                    str(per_publisher),
                ],
                cwd=settings.BASE_DIR,
                env=env,
                stderr=subprocess.PIPE,
            )
            for i in range(PUBLISHERS)
        ]
        for p in publishers:
            _, err = p.communicate(timeout=DRAIN_TIMEOUT)
            assert p.returncode == 0, err.decode(errors="replace")

        # then: every message is received, exactly once
        deadline, last_count, last_progress = time.monotonic() + DRAIN_TIMEOUT, -1, time.monotonic()
        while True:
            received = record_file.read_text().split() if record_file.exists() else []
            if len(received) != last_count:
                last_count, last_progress = len(received), time.monotonic()
            stalled = time.monotonic() - last_progress > STALL_TIMEOUT  # what is missing is lost
            if (
                len(received) >= MESSAGES
                or stalled
                or time.monotonic() > deadline
                or runstack.poll() is not None
            ):
                break
            time.sleep(1)
        counts = Counter(map(int, received))
        text = log.read_text(errors="replace")
        assert sorted(counts) == list(range(MESSAGES)), (
            f"{MESSAGES - len(counts)} messages never arrived; last lines:\n{text[-3000:]}"
        )
        assert [n for n, c in counts.items() if c > 1] == []

        # and: no worker ever exited (runstack would have restarted it), no file was set aside
        assert runstack.poll() is None
        assert "exited with code" not in text, text[-3000:]
        assert "Unrecoverable error" not in text
        assert not any((var_dir / "broker" / "failed").iterdir())
    finally:
        if runstack.poll() is None:
            runstack.send_signal(signal.SIGINT)
            try:
                runstack.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(runstack.pid, signal.SIGKILL)
        for pid in map(int, re.findall(r"started \(pid=(\d+)\)", log.read_text(errors="replace"))):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
