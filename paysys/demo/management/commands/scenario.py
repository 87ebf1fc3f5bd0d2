"""``manage.py scenario NAME ... | --list | all`` (``make scenarios``): the course's fault scenarios.

Each runs on the stack at ``PUBLIC_BASE_URL`` (started here, as ``make demo`` does, when nothing
answers: then with compressed schedules, seconds instead of minutes, printed as such): payments
before, the fault injected for real through the stack's control socket, payments during it, the
fault removed, convergence awaited, ``reconcile --strict``. One row per scenario; exit 1 if any
row is wrong. ``--chaos --seed N``: N payments under random SIGKILLs of workers and beat instead.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone

from paysys.demo.management.commands import demo

if settings.SANDBOX_ENABLED:  # the scenarios drive the bank simulator; without it handle() refuses
    from paysys.demo.scenarios import COMPRESSED_SCHEDULES, SCENARIOS, Chaos, Client, Row

HEADER = (
    "scenario",
    "payments",
    "completed",
    "lost",
    "doubled",
    "converged in",
    "reconcile",
    "what the patterns did",
)


class Command(demo.Command):
    help = "Run the course's fault scenarios (or `all`) against the running stack, starting one if none answers."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("names", nargs="*", help="scenario names, or `all` (see --list)")
        parser.add_argument("--list", action="store_true", help="list the scenarios")
        parser.add_argument(
            "--chaos",
            action="store_true",
            help="a seeded run of random SIGKILLs under many payments",
        )
        parser.add_argument("--seed", type=int, default=1, help="the chaos run's seed (default 1)")
        parser.add_argument(
            "--payments", type=int, default=300, help="the chaos run's payments (default 300)"
        )
        parser.set_defaults(timeout=None)
        for action in parser._actions:  # demo's --timeout, which means something else here
            if action.dest == "timeout":
                action.help = (
                    "seconds each scenario may take to converge once its fault is removed "
                    "(default 90 on a stack it starts, 600 on a running one; 3x for --chaos)"
                )

    def handle(self, *args, **options):
        if not settings.SANDBOX_ENABLED:
            raise CommandError(
                "the scenarios pay at the bank simulator, which is off here (DEBUG=false or "
                "SANDBOX_ENABLED=false): run them on the embedded default or a development stack"
            )
        if options["list"]:
            for scenario in SCENARIOS:
                self.stdout.write(f"{scenario.name:<16} {scenario.title}")
            return
        names = options["names"]
        if not names and not options["chaos"]:
            raise CommandError("name a scenario, `all`, --list or --chaos")
        known = {s.name: s for s in SCENARIOS}
        chosen = SCENARIOS if names == ["all"] else [known[n] for n in names if n in known]
        unknown = [n for n in names if n not in known and names != ["all"]]
        if unknown:
            raise CommandError(
                f"unknown scenario {', '.join(unknown)}; one of: {', '.join(known)} or all"
            )
        self.chosen = chosen
        self.options_chaos, self.seed, self.payment_count = (
            options["chaos"],
            options["seed"],
            options["payments"],
        )
        self.compressed = False  # until this command starts the stack itself
        logging.getLogger().setLevel(
            logging.WARNING
        )  # the table is the output, not each service call's log line
        # a stack the scenarios start themselves runs on compressed schedules, its databases cuttable
        os.environ.update(COMPRESSED_SCHEDULES)
        os.environ["PAYSYS_DB_PROXY"] = "1"
        super().handle(*args, **options)

    def start_stack(self, base, timeout):
        self.compressed = True
        return super().start_stack(base, timeout)

    def run_demo(self, base: str, timeout: float | None) -> None:
        compressed = self.compressed
        if compressed:
            self.say(
                "compressed schedules, for the scenarios only: "
                + ", ".join(
                    f"{k}={','.join(v.split(',')[:4])}{',...' if v.count(',') > 3 else ''}"
                    for k, v in COMPRESSED_SCHEDULES.items()
                )
            )
        else:
            self.say("the running stack's own schedules (not compressed): convergence takes longer")
        timeout = timeout or (90 if compressed else 600) * (3 if self.options_chaos else 1)
        client = Client(base=base, request=self.request, sandbox_headers=self.sandbox_control)
        stamp = timezone.now().strftime("%H%M%S%f")
        if self.options_chaos:
            runs = [Chaos(client, stamp, self.say, seed=self.seed, payments=self.payment_count)]
        else:
            runs = [cls(client, stamp, self.say) for cls in self.chosen]
        rows = []
        for run in runs:
            self.stdout.write(self.style.MIGRATE_HEADING(f"scenario {run.title}"))
            row = run.run(timeout)
            rows.append(row)
            self.say(f"{'ok' if row.ok else 'WRONG'}: {row.error or row.pattern}")
        self.print_rows(rows)
        wrong = [r.scenario for r in rows if not r.ok]
        if wrong:
            raise CommandError(f"wrong: {', '.join(wrong)}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(rows)} scenario{'s' * (len(rows) > 1)}: every payment completed once, "
                "merchant balances exact, reconcile --strict clean"
            )
        )

    def print_rows(self, rows: list[Row]) -> None:
        table = [HEADER] + [
            (
                r.scenario,
                str(r.payments),
                str(r.completed),
                str(r.lost),
                str(r.doubled),
                f"{r.converge_seconds:.1f} s" if r.converge_seconds is not None else "-",
                r.reconcile + ("" if r.balance_exact else ", balance WRONG"),
                r.error or r.pattern,
            )
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
        self.stdout.write("")
        for i, row in enumerate(table):
            line = (
                "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False))
                + "  "
                + row[-1]
            )
            self.stdout.write(self.style.MIGRATE_HEADING(line) if i == 0 else line)
        self.stdout.write("")
