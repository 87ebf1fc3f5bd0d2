"""manage.py bench_reconcile, small: its generated orders are consistent, in databases of its own."""

import json
import os
import subprocess
import sys

from django.conf import settings


def test_bench_reconcile_generates_consistent_paid_orders_in_databases_of_its_own(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL")
    }  # SQLite: quick to make
    env["PAYSYS_VAR_DIR"] = str(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "bench_reconcile",
            "--orders",
            "1200",
            "--payers",
            "50",
            "--json",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["consistent"] and result["problems"] == 0 and result["vendor"] == "sqlite"
    assert result["checked"]["paid orders"] == 1200 and result["checked"]["vouchers"] == 1200
    assert (
        result["checked"]["merchant credit postings"] == 1200
        and result["checked"]["points award postings"] == 1200
    )
    assert not list(
        tmp_path.glob("*.sqlite3")
    )  # the stack's own databases were never opened for it
