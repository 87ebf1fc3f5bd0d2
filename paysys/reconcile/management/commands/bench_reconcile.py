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
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connections, router, transaction
from django.test.utils import setup_databases, teardown_databases
from django.utils import timezone

from paysys.reconcile.management.commands.reconcile import progress_bar

BATCH = 10_000  # orders generated per round (one bulk insert per table)
SUFFIX = "_benchrec"


class Command(BaseCommand):
    help = "Time reconcile over N generated paid orders, in databases of its own (dropped at the end)."

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
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: its databases are dropped all the same
        started = time.monotonic()
        old = setup_databases(verbosity=0, interactive=False, aliases=set(connections), serialized_aliases=set())
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
            "orders": opts["orders"], "vendor": connections["orders"].vendor, "consistent": report.consistent,
            "problems": report.inconsistencies, "reconcile_seconds": round(seconds, 1),
            "orders_per_second": round(opts["orders"] / max(seconds, 1e-9)), "generate_seconds": round(generated, 1),
            "migrate_seconds": round(migrated, 1), "step_seconds": steps, "checked": dict(report.checked),
        }
        if opts["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(
                f"reconcile of {result['orders']:,} paid orders on {result['vendor']}: {result['reconcile_seconds']} s "
                f"({result['orders_per_second']:,} orders/s), {'consistent' if report.consistent else 'INCONSISTENT'}"
                f"\n  seconds per step: " + ", ".join(f"{step} {n}" for step, n in steps.items()) +
                f"\n  generated in {result['generate_seconds']} s, databases migrated in {result['migrate_seconds']} s"
                f"\n  checked " + ", ".join(f"{n:,} {what}" for what, n in report.checked.items()))
        if not report.consistent:
            raise CommandError(f"the generated rows are not consistent: {dict(report.problems)}"[:2000])

    # --- the rows ---------------------------------------------------------------------------

    def _generate(self, opts) -> float:
        from accounting.models import Account, AccountCode
        from accounts.models import FundAccount, PointsAccount
        from notifications.models import Endpoint

        started = time.monotonic()
        merchants, payers = range(1, opts["merchants"] + 1), range(1, opts["payers"] + 1)
        funds = {m: FundAccount.objects.create(owner_type="merchant", owner_id=m, currency="CNY") for m in merchants}
        points = {p: acc for p, acc in zip(payers, PointsAccount.objects.bulk_create(
            [PointsAccount(payer_id=p) for p in payers], batch_size=BATCH))}
        if None in {acc.pk for acc in points.values()}:  # MariaDB returns no ids from a bulk insert
            points = {acc.payer_id: acc for acc in PointsAccount.objects.all()}
        endpoints = {m: Endpoint.objects.create(merchant_id=m, url=f"http://127.0.0.1:9/m{m}") for m in merchants}
        accounts = {a.code: a for a in Account.objects.all()}
        codes = (accounts[AccountCode.BANK_CLEARING], accounts[AccountCode.MERCHANT_PAYABLE], accounts[AccountCode.FEE_INCOME])
        balances = {"funds": dict.fromkeys(merchants, 0), "points": dict.fromkeys(payers, 0)}
        total = opts["orders"]
        for first in range(1, total + 1, BATCH):
            self._round(range(first, min(first + BATCH, total + 1)), opts, funds, points, endpoints, codes, balances)
            if opts["progress"]:
                self._bar("generating", min(first + BATCH - 1, total), total)
        for m, balance in balances["funds"].items():
            FundAccount.objects.filter(pk=funds[m].pk).update(balance=balance)
        for p, balance in balances["points"].items():
            PointsAccount.objects.filter(pk=points[p].pk).update(balance=balance)
        return time.monotonic() - started

    def _round(self, ids, opts, funds, points, endpoints, codes, balances) -> None:
        """One bulk insert per table (plain tuples: model instances cost more than the database)."""
        from accounting.models import Voucher, VoucherLine
        from accounts.models import FundEntry, PointsEntry
        from notifications.models import Notification
        from orders.models import Order
        from paysys.contracts import OrderPaid
        from paysys.core.money import points_for
        from paysys.tcc.models import GlobalTransaction

        now = timezone.now()
        rows = {model: [] for model in (Order, GlobalTransaction, FundEntry, PointsEntry, Voucher, VoucherLine, Notification)}
        at = {alias: connections[alias].ops.adapt_datetimefield_value for alias in connections}
        paid_at, created = {a: at[a](now - timedelta(hours=2)) for a in at}, {a: at[a](now - timedelta(hours=1)) for a in at}
        for i in ids:
            merchant, payer = i % opts["merchants"] + 1, i % opts["payers"] + 1
            amount = 100 + (i * 7919) % 99_900
            fee = (amount * 60 + 5000) // 10_000  # 0.6 %
            award = points_for(amount, "CNY")
            out, xid, key = f"BR{i:020d}", f"{i:032x}", f"bank:BT{i}"
            rows[Order].append((i, out, merchant, f"M{i}", amount, "CNY", "bench", payer, "", "SUCCESS", f"BT{i}", xid,
                                "bank", created["orders"], paid_at["orders"], 0, created["orders"], created["orders"]))
            rows[GlobalTransaction].append((i, xid, "complete_order", key, 1, key, "CONFIRMED", paid_at["default"], 0, False,
                                            "", paid_at["default"], paid_at["default"], paid_at["default"]))
            credit = amount - fee
            balances["funds"][merchant] += credit
            for kind, after in (("hold", balances["funds"][merchant] - credit), ("posted", balances["funds"][merchant])):
                rows[FundEntry].append((funds[merchant].pk, kind, "credit", credit, after, xid, out, "", "", created["funds"]))
            if award:
                balances["points"][payer] += award
                for kind, after in (("hold", balances["points"][payer] - award), ("posted", balances["points"][payer])):
                    rows[PointsEntry].append((points[payer].pk, kind, award, after, xid, out, "", created["points"]))
            rows[Voucher].append((i, f"{OrderPaid.TOPIC}:{out}", "CNY", "", created["accounting"]))
            rows[VoucherLine] += [(i, codes[0].pk, amount, 0), (i, codes[1].pk, 0, credit)] + (
                [(i, codes[2].pk, 0, fee)] if fee else [])
            rows[Notification].append((f"msg_bench{i}", merchant, i, out, f"M{i}", OrderPaid.TOPIC, endpoints[merchant].pk,
                                       endpoints[merchant].url, "{}", "SUCCEEDED", 1, 0, "", created["notifications"],
                                       created["notifications"], created["notifications"]))
        columns = {
            Order: ["id", "out_trade_no", "merchant_id", "merchant_order_no", "amount", "currency", "subject", "payer_id",
                    "notify_url", "status", "bank_trade_no", "tcc_xid", "pay_method", "expires_at", "paid_at", "poll_count",
                    "created_at", "updated_at"],
            GlobalTransaction: ["id", "xid", "name", "business_key", "attempt", "confirmed_key", "status", "deadline",
                                "attempts", "needs_human", "last_error", "created_at", "decided_at", "finished_at"],
            FundEntry: ["account_id", "kind", "direction", "amount", "balance_after", "xid", "out_trade_no", "reason",
                        "created_by", "created_at"],
            PointsEntry: ["account_id", "kind", "points", "balance_after", "xid", "out_trade_no", "reason", "created_at"],
            Voucher: ["id", "source", "currency", "description", "created_at"],
            VoucherLine: ["voucher_id", "account_id", "debit", "credit"],
            Notification: ["webhook_id", "merchant_id", "order_id", "out_trade_no", "merchant_order_no", "event_type",
                           "endpoint_id", "url", "body", "status", "attempt_count", "step", "last_error", "created_at",
                           "updated_at", "succeeded_at"],
        }
        for model, values in rows.items():
            alias = router.db_for_write(model)
            connection = connections[alias]
            names = ", ".join(connection.ops.quote_name(c) for c in columns[model])
            sql = f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({names}) VALUES ({', '.join(['%s'] * len(columns[model]))})"
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.executemany(sql, values)

    def _bar(self, step: str, done: int, total: int) -> None:
        progress_bar(self.stderr, step, done, total)
