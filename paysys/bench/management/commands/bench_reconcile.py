"""How long reconcile takes on a large database.

    manage.py bench_reconcile --orders N [--merchants 20] [--payers 5000] [--json] [--progress]

Isolated: makes databases of its own (each service's database name + ``_benchrec`` on MariaDB,
files in a temporary folder on SQLite), migrates them, bulk-inserts N bank-paid orders with every
row reconcile reads (the order, its CONFIRMED TCC transaction, the merchant's credit hold and
post, the payer's points hold and post, the voucher and its three lines, the notification;
account columns equal to their entries), runs reconcile over them, timed, and drops the
databases. Never touches the databases the stack uses. Exit 1 unless reconcile finds them
consistent.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.test.utils import setup_databases, teardown_databases

from paysys.bench.generate import paid_orders_generate
from paysys.reconcile.management.commands.reconcile import progress_bar

SUFFIX = "_benchrec"


class Command(BaseCommand):
    help = (
        "Time reconcile over N generated paid orders, in databases of its own (dropped at the end)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, required=True)
        parser.add_argument("--merchants", type=int, default=20)
        parser.add_argument("--payers", type=int, default=5000)
        parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
        parser.add_argument("--progress", action="store_true", help="progress bars on stderr")

    def handle(self, *args, **opts):
        if opts["orders"] < 1 or opts["merchants"] < 1 or opts["payers"] < 1:
            raise CommandError("--orders, --merchants and --payers must be at least 1")
        folder = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
        for alias in connections:
            settings_dict = connections[alias].settings_dict
            test = settings_dict.setdefault("TEST", {})
            if connections[alias].vendor == "sqlite":
                test["NAME"] = str(folder / f"{alias}.sqlite3")
            else:
                test["NAME"] = f"{settings_dict['NAME']}{SUFFIX}"
        signal.signal(
            signal.SIGTERM, lambda *_: sys.exit(143)
        )  # stopped: its databases are dropped all the same
        started = time.monotonic()
        old = setup_databases(
            verbosity=0, interactive=False, aliases=set(connections), serialized_aliases=set()
        )
        try:
            migrated = time.monotonic() - started
            generated = self._generate(opts)
            from paysys.reconcile.checks import reconcile

            started = time.monotonic()
            steps, last = {}, [started]

            def progress(step: str, done: int, total: int) -> None:
                if done == total:  # each step's seconds, for the result
                    steps[step], last[0] = round(time.monotonic() - last[0], 1), time.monotonic()
                if opts["progress"]:
                    self._bar(step, done, total)

            report = reconcile(grace=0, progress=progress)
            seconds = time.monotonic() - started
        finally:
            teardown_databases(old, verbosity=0)
            shutil.rmtree(folder, ignore_errors=True)
        result = {
            "orders": opts["orders"],
            "vendor": connections["orders"].vendor,
            "consistent": report.consistent,
            "problems": report.inconsistencies,
            "reconcile_seconds": round(seconds, 1),
            "orders_per_second": round(opts["orders"] / max(seconds, 1e-9)),
            "generate_seconds": round(generated, 1),
            "migrate_seconds": round(migrated, 1),
            "step_seconds": steps,
            "checked": dict(report.checked),
        }
        if opts["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(
                f"reconcile of {result['orders']:,} paid orders on {result['vendor']}: {result['reconcile_seconds']} s "
                f"({result['orders_per_second']:,} orders/s), {'consistent' if report.consistent else 'INCONSISTENT'}"
                f"\n  seconds per step: "
                + ", ".join(f"{step} {n}" for step, n in steps.items())
                + f"\n  generated in {result['generate_seconds']} s, databases migrated in {result['migrate_seconds']} s"
                f"\n  checked " + ", ".join(f"{n:,} {what}" for what, n in report.checked.items())
            )
        if not report.consistent:
            raise CommandError(
                f"the generated rows are not consistent: {dict(report.problems)}"[:2000]
            )

    def _generate(self, opts) -> float:
        started = time.monotonic()
        paid_orders_generate(
            range(1, opts["orders"] + 1),
            merchants=range(1, opts["merchants"] + 1),
            payers=range(1, opts["payers"] + 1),
            progress=(lambda done, total: self._bar("generating", done, total))
            if opts["progress"]
            else None,
        )
        return time.monotonic() - started

    def _bar(self, step: str, done: int, total: int) -> None:
        progress_bar(self.stderr, step, done, total)
