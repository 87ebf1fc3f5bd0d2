"""Every shell block of README.md, then of docs/api.md, docs/operations.md and docs/benchmarks.md,
runs as written against a fresh ``make run`` stack (issue 15; the pages the README's walk-through
moved to in issue 17).

The stack is what ``make run`` starts (``migrate_all``, then ``runstack`` with its banner, which
creates the demo merchant and ``var/demo-merchant.json``), in the embedded mode, on a fresh var/
and a free port. The pages' ``sh`` / ``bash`` blocks are taken in order and run in one bash
session in a checkout-like folder (``.venv``, ``manage.py`` and that ``var/``), as a reader pastes
them into one terminal: a variable one block sets is there for the next. The one change made to
the text is the stack's port for 8000. Every ``curl`` must get a 2xx, every command exit 0.

What cannot run here is listed, with the reason: a whole block in SKIPPED (by the heading it is
under), a line in INSTEAD (run as its equivalent, or not at all). A new block runs by default.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.core.test_runstack import alive, embedded_env, free_port

README = settings.BASE_DIR / "README.md"
# the README first (its quickstart sets KEY), then the pages that continue it, in reading order
PAGES = [
    README,
    *(settings.BASE_DIR / "docs" / name for name in ("api.md", "operations.md", "benchmarks.md")),
]
STARTUP_TIMEOUT = 180  # the whole stack, a dozen processes, on a loaded 2-core machine
BLOCK_TIMEOUT = 300

# heading a block is under -> why it is not run here
SKIPPED = {
    "Configuration": "the full stack's environment (MariaDB, Redis, secrets): CI's full-stack run",
    "Full stack: MariaDB/MySQL and Redis": "a second stack on MariaDB and Redis, then the whole suite: CI's full-stack run",
    "One service's worker alone": "long-running processes; tests/core/test_runstack.py runs one worker alone",
    "Messages (`manage.py bench_messaging`)": "a benchmark of the full stack, minutes long",
    "Whole payments (`manage.py bench_payments`)": "minutes long; tests/bench/test_bench_payments.py runs its --quick",
    "Flat with size (`manage.py bench_history`)": "a bench stack of its own filled with millions of rows, "
    "tens of minutes; tests/bench/test_bench_history.py runs it small",
    "Retention while paying": "a bench stack of its own, new databases filled with a backlog, then "
    "bench_payments: minutes long; tests/bench/test_bench_history.py runs --age-days small",
    "Dependencies": "regenerates the locks from PyPI (network, pip-tools)",
    "Run the course's scenarios": "minutes long, each fault on a stack of its own: tests/faults/test_scenarios.py runs "
    "them and tests/core/test_stack_control.py the stack commands",
}
# a README line -> what runs instead (None: nothing), and why
INSTEAD = {
    "make run": (None, "the stack under test is make run's"),
    "make demo": (
        ".venv/bin/python manage.py demo",
        "what make demo runs once .venv is installed (make would first check the shared venv)",
    ),
    "make test": (None, "the suite this test is part of"),
}
# blocks (by heading) that read the stack's state: the test waits, as a reader would, until what
# the blocks before set going has settled (a resend delivered, say) before running them
SETTLE_FIRST = {"The merchant simulator (sandbox)", "Reconciliation (`manage.py reconcile`)"}


@dataclass
class Block:
    heading: str
    line: int  # of the opening fence, 1-based
    text: str
    page: str = "README.md"


def page_blocks() -> list[Block]:
    """Every page's shell blocks, in PAGES order."""
    return [block for page in PAGES for block in shell_blocks(page.read_text(), page.name)]


def shell_blocks(markdown: str, page: str = "README.md") -> list[Block]:
    blocks, heading, fence, start, body = [], "", None, 0, []
    for number, line in enumerate(markdown.splitlines(), start=1):
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("```"):
                fence, start, body = line[3:].strip(), number, []
        elif line.startswith("```"):
            if fence in ("sh", "bash"):
                blocks.append(Block(heading, start, "\n".join(body), page))
            fence = None
        else:
            body.append(line)
    return blocks


def as_run(block: Block, port: int) -> str:
    """The block as this test runs it: INSTEAD's lines replaced, the stack's port for 8000."""
    lines = []
    for line in block.text.splitlines():
        command = line.split("#", 1)[0].strip()
        if command in INSTEAD:
            replacement, _ = INSTEAD[command]
            line = replacement or ":"
        lines.append(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    return "\n".join(lines)


def test_the_readme_blocks_are_found_and_every_skip_names_a_block_that_exists():
    blocks = page_blocks()

    headings = {block.heading for block in blocks}
    assert len(blocks) >= 8
    assert set(SKIPPED) <= headings, set(SKIPPED) - headings
    assert SETTLE_FIRST <= headings, SETTLE_FIRST - headings
    lines = {line.split("#", 1)[0].strip() for block in blocks for line in block.text.splitlines()}
    assert set(INSTEAD) <= lines, set(INSTEAD) - lines


# --- a fresh make run stack ----------------------------------------------------------------


@dataclass
class Stack:
    base: str
    port: int
    env: dict
    folder: Path  # a checkout as a reader has one: .venv, manage.py, var/
    log: Path


@pytest.fixture
def make_run(tmp_path):
    """``make run`` on a fresh var/: migrate_all, then runstack with its banner, every process."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path / "checkout"
    var = folder / "var"
    var.mkdir(parents=True)
    for name in (".venv", "manage.py"):
        (folder / name).symlink_to(settings.BASE_DIR / name)
    env = embedded_env(
        var, PORT=str(port), PUBLIC_BASE_URL=base, DJANGO_SETTINGS_MODULE="paysys.settings"
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate_all"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    log = tmp_path / "runstack.log"
    with open(log, "wb") as out:
        runstack = subprocess.Popen(
            [sys.executable, "manage.py", "runstack"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stack = Stack(base, port, env, folder, log)
    try:
        _wait_until_up(stack, runstack)
        yield stack
    finally:
        os.killpg(runstack.pid, signal.SIGINT)  # Ctrl-C: runstack stops every process
        try:
            runstack.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runstack.pid, signal.SIGKILL)
            runstack.wait(timeout=10)
        for pid in map(int, re.findall(r"started \(pid=(\d+)\)", log.read_text(errors="replace"))):
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def _wait_until_up(stack: Stack, runstack: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        text = stack.log.read_text(errors="replace")
        assert runstack.poll() is None, f"runstack exited {runstack.returncode}:\n{text[-4000:]}"
        waiting = [
            q
            for q in settings.SERVICE_QUEUES
            if not re.search(rf"\b{re.escape(q)}@\S+ ready\.", text)
        ]
        try:
            healthy = requests.get(f"{stack.base}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            healthy = False
        if healthy and not waiting:
            return
        assert time.monotonic() < deadline, (
            f"stack not up in {STARTUP_TIMEOUT} s (workers {waiting}):\n{text[-4000:]}"
        )
        time.sleep(0.5)


# --- the README, run -----------------------------------------------------------------------

PRELUDE = """\
set -eo pipefail
curl() { command curl --fail-with-body --show-error "$@"; }   # an answer that is not a 2xx fails the block
settled() {   # the test's own wait (not the README's): nothing in flight, up to 120 s
  for _ in $(seq 120); do .venv/bin/python manage.py reconcile --strict >/dev/null 2>&1 && return 0; sleep 1; done
  .venv/bin/python manage.py reconcile --strict
}
"""


def session_script(blocks: list[Block], port: int) -> str:
    parts = [PRELUDE]
    for number, block in enumerate(blocks, start=1):
        if block.heading in SKIPPED:
            continue
        marker = f"block {number}, {block.page} line {block.line}, under {block.heading!r}"
        parts.append(f"echo {json.dumps('>>> ' + marker)}")
        if block.heading in SETTLE_FIRST:
            parts.append("settled")
        parts.append(as_run(block, port))
    parts.append("echo '>>> every block ran'")
    return "\n".join(parts) + "\n"


def test_every_readme_command_block_runs_as_written_against_a_fresh_make_run(make_run):
    blocks = page_blocks()
    script = session_script(blocks, make_run.port)

    result = subprocess.run(
        ["bash", "-c", script],
        cwd=make_run.folder,
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )

    output = result.stdout + result.stderr
    last = re.findall(r">>> (.*)", result.stdout)
    assert result.returncode == 0, (
        f"failed in {last[-1] if last else 'the prelude'} (exit {result.returncode}):\n{output[-6000:]}\n"
        f"--- stack log ---\n{make_run.log.read_text(errors='replace')[-3000:]}"
    )
    assert last[-1] == "every block ran"
    # what the first screen promises of make demo, and what the quickstart did
    assert "every order is paid (SUCCESS)" in result.stdout
    demo_rows = re.findall(r"^demo-\d+-\d+\s", result.stdout, flags=re.M)
    assert len(demo_rows) == 4, result.stdout  # "make demo   # pay four orders"
    orders = requests.get(
        f"{make_run.base}/api/v1/orders/A-1001",
        timeout=10,
        headers={
            "Authorization": f"Bearer {json.loads((make_run.folder / 'var' / 'demo-merchant.json').read_text())['api_key']}"
        },
    )
    assert orders.status_code == 200 and orders.json()["status"] in ("PAYING", "SUCCESS"), (
        orders.text
    )
