"""manage.py reconcile [--json] [--strict] [--grace SECONDS] [--progress]

Exit 0 when consistent (with ``--strict``: and nothing in flight or stuck), else 1. Every run is
kept as a ReconcileReport (admin: Reconcile reports)."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from paysys.reconcile.checks import EXAMPLES
from paysys.reconcile.services import reconcile_and_record


class Command(BaseCommand):
    help = "Check the invariants between orders, funds, points, accounting and notifications (exit 0: consistent)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument(
            "--strict", action="store_true", help="also fail while anything is in flight or stuck"
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=60.0,
            help="seconds a paid order may still lack its credit, award, voucher or notification (in flight)",
        )
        parser.add_argument(
            "--progress", action="store_true", help="show a progress bar per table on stderr"
        )

    def handle(self, *args, **opts):
        try:
            report, _ = reconcile_and_record(
                grace=opts["grace"],
                triggered_by="command",
                progress=self._bar if opts["progress"] else None,
            )
        except DatabaseError as exc:
            raise CommandError(
                f"not reconciled: a service database did not answer ({exc}); run it again once it is back"
            ) from exc
        ok = report.settled if opts["strict"] else report.consistent
        if opts["json"]:
            self.stdout.write(json.dumps(report.as_dict(), default=str))
        else:
            self._print(report, ok, opts["strict"])
        sys.exit(0 if ok else 1)

    def _bar(self, step: str, done: int, total: int) -> None:
        progress_bar(self.stderr, step, done, total, unit=" ranges")

    def _print(self, report, ok: bool, strict: bool) -> None:
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items()) or "nothing"
        self.stdout.write(f"checked {checked}")
        for check, found in report.problems.items():
            self.stdout.write(self.style.ERROR(f"INCONSISTENT {check}: {len(found)}"))
            for detail in found[:EXAMPLES]:
                self.stdout.write(f"  {detail}")
        for title, counts in (
            ("in flight", report.in_flight),
            ("stuck (for a human)", report.stuck),
        ):
            for what, n in sorted((+counts).items()):
                self.stdout.write(f"{title}: {what}: {n}")
        if not report.consistent:
            verdict = self.style.ERROR("INCONSISTENT: see above; nothing was changed")
        elif not ok:
            verdict = self.style.WARNING(
                "consistent, but not settled (--strict): items in flight or stuck"
            )
        else:
            verdict = self.style.SUCCESS("consistent" + (", settled" if strict else ""))
        self.stdout.write(verdict)


def progress_bar(stream, step: str, done: int, total: int, *, unit: str = "") -> None:
    """One bar per step, redrawn in place; the line ends when the step is done."""
    filled = int(30 * done / max(total, 1))
    stream.write(
        f"\r  {step:<16} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}{unit}",
        ending="\n" if done == total else "",
    )
    stream.flush()
