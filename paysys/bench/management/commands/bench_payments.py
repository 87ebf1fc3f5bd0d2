"""``manage.py bench_payments``: whole payments through a running stack, against a monolith.

Against ``PUBLIC_BASE_URL`` (``--base-url``), as ``make demo`` does, so the same command measures
the embedded default, the full stack or a deployment whose databases this process can read:

1. a bench merchant (its own per-key limits raised, nobody else's) whose server is a local
   process verifying every notification with ``standardwebhooks`` (paysys.bench.receiver);
2. ``--payments`` orders created over the API, then paid: signed bank notifies posted to the
   gateway from ``--clients`` processes, and a share (``--balance-share``) paid from payers'
   wallets (``POST /api/v1/orders/{no}/pay``);
3. a payment is done when its order is SUCCESS, the merchant credited, the points awarded, the
   voucher booked and the merchant's server has acknowledged the notification. Printed: payments/s
   from the first notify to the last acknowledgement, notify -> acknowledgement latency, each
   stage's share of it, CPU seconds and database queries per payment;
4. the monolith: the same rows per payment in one local transaction, on 1 and 4 connections of
   the same database server, and the ratio;
5. every payment checked in every service (its order SUCCESS, one merchant credit, one points
   posting, one voucher, one notification: nothing lost, nothing doubled) and ``reconcile --strict``;
6. with ``--refunds PERCENT``, that share of the paid orders refunded once every payment is done
   (alternately the whole amount and half of it), from ``--clients`` threads: refunds/s from the
   first request to the last refund's notification acknowledged, each refund checked SUCCEEDED
   once (its merchant debit, voucher and notification once). The refunded orders are wallet-paid
   ones: the bench plays the bank for its bank payments (it posts their notifies itself), so the
   bank simulator never saw them and would refuse their refunds.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import Max

from accounting.models import Voucher
from accounts.models import FundEntry, PointsEntry
from accounts.services import wallet_credit
from notifications.models import Notification
from orders.models import Order
from paysys.bench.client import post_notifies
from paysys.bench.monolith import monolith_baseline
from paysys.core.services import merchant_create, payer_create_with_agreement
from paysys.reconcile.checks import reconcile

STAGES = ["gateway", "orders / TCC", "funds", "points", "accounting", "notifications", "delivery"]


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Command(BaseCommand):
    help = "Drive real payments through the running stack; print payments/s, latency and the monolith ratio."

    def add_arguments(self, parser):
        parser.add_argument("--payments", type=int, default=5000)
        parser.add_argument(
            "--clients", type=int, default=8, help="client processes posting bank notifies"
        )
        parser.add_argument(
            "--balance-share",
            type=float,
            default=0.1,
            help="share paid from wallets (TCC over HTTP)",
        )
        parser.add_argument("--base-url", default="", help="default: PUBLIC_BASE_URL")
        parser.add_argument(
            "--timeout", type=float, default=600, help="seconds to wait for every payment"
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=0,
            help="payments sent per second, paced (default: as fast as the gateway answers); "
            "latency at half the sustained rate is the figure to compare",
        )
        parser.add_argument("--no-baseline", action="store_true", help="skip the monolith baseline")
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a small smoke run (CI): 60 payments, short baseline",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument(
            "--refunds",
            type=float,
            default=0,
            metavar="PERCENT",
            help="refund this share (0-100) of the paid orders once they are done, and report "
            "refunds/s; needs --balance-share at least as large (refunds go to wallet-paid orders)",
        )

    def handle(self, *args, **options):
        logging.disable(
            logging.INFO
        )  # the services' own INFO lines (wallet credited, ...) are not the bench's output
        self.quiet = options["json"]
        payments = 60 if options["quick"] else options["payments"]
        refund_count = _refund_count(payments, options)
        base = (options["base_url"] or settings.PUBLIC_BASE_URL).rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False
        self._check_stack(base)
        work = Path(tempfile.mkdtemp(prefix="bench-payments-"))
        port = _free_port()
        merchant, api_key = merchant_create(
            name=f"bench-{uuid.uuid4().hex[:8]}",
            notify_url=f"http://127.0.0.1:{port}/hook",
            fee_rate_bp=60,
        )
        self._raise_limits(merchant)
        receiver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "paysys.bench.receiver",
                str(port),
                merchant.webhook_secret,
                str(work / "acks.log"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if receiver.stdout.readline().strip() != b"ready":
                raise CommandError("the bench merchant server did not start")
            result = self._run(base, merchant, api_key, payments, options, work)
            if refund_count:
                result["refunds"] = self._run_refunds(
                    base, merchant, api_key, refund_count, options, work
                )
        finally:
            receiver.terminate()
            receiver.wait(10)
        if not options["no_baseline"]:
            self.say("monolith baseline: the same rows per payment in one transaction ...")
            result["baseline"] = monolith_baseline(payments=200 if options["quick"] else 4000)
            result["baseline_per_s"] = max(result["baseline"].values())
            result["ratio"] = round(result["payments_per_s"] / result["baseline_per_s"], 3)
        else:
            result.update(baseline_per_s=None, ratio=None)
        result["reconcile_strict"], report = self._reconcile()
        if not result["reconcile_strict"]:
            result["reconcile_report"] = report
        self._report(result)
        _refunds_verdict(result.get("refunds"))
        if result["lost"] or result["doubled"]:
            raise CommandError(
                f"{result['lost']} payment(s) lost, {result['doubled']} doubled (examples: "
                f"{result['lost_examples'] + result['doubled_examples']})"
            )
        if not result["reconcile_strict"]:
            raise CommandError(
                "every bench payment completed once, but reconcile --strict is not clean: it checks the "
                "whole platform, so items from before this run count too (its report is above, or in "
                "reconcile_report with --json). Earlier notifications to merchants that do not "
                "answer stay in flight for hours (their retry schedule): settle them in the admin "
                "(Notifications: resend, or disable the endpoint), or run the bench on a fresh "
                "stack (the embedded default: PAYSYS_VAR_DIR=/tmp/bench-stack make run)"
            )

    # --- set-up ----------------------------------------------------------------------------------

    def _check_stack(self, base: str) -> None:
        try:
            ok = self.http.get(f"{base}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        if not ok:
            from paysys.core.stack import StackLock

            holder = StackLock(settings.VAR_DIR).holder()
            if holder and holder.get("base_url", base) != base:
                raise CommandError(
                    f"nothing answers at {base}, but a stack runs on this var/ at {holder['base_url']}: "
                    f"run this with --base-url {holder['base_url']} (or the PORT it was started with)"
                )
            raise CommandError(
                f"nothing healthy answers at {base}/healthz: start the stack first (make run, "
                "or the full stack: DATABASE_URL=... CELERY_BROKER_URL=... make run), then run this again"
            )

    def _raise_limits(self, merchant) -> None:
        from paysys.core.models import Merchant

        Merchant.objects.filter(pk=merchant.pk).update(
            api_rate_limit="1000000/min", max_open_orders=10**7
        )

    def _run(self, base, merchant, api_key, payments, options, work) -> dict:
        api = requests.Session()
        api.trust_env = False
        api.headers["Authorization"] = f"Bearer {api_key}"
        balance_count = int(payments * options["balance_share"])
        payers = [
            payer_create_with_agreement(
                name=f"bench-payer-{i}", merchant_id=merchant.pk, issued_by="bench_payments"
            )
            for i in range(max(1, options["clients"]))
        ]
        payers = [(payer, token) for payer, _, token in payers]
        for payer, _ in payers:
            wallet_credit(
                payer_id=payer.pk,
                amount=10**9,
                reason="bench_payments",
                credited_by="bench_payments",
            )
        stamp = uuid.uuid4().hex[:6]

        self.say(f"creating {payments} orders over the API ...")

        def create(i):
            payer = payers[i % len(payers)][0]
            body = {
                "merchant_order_no": f"B{stamp}-{i}",
                "amount": 1000 + i % 9000,
                "currency": "CNY",
                "subject": "bench",
                "payer_id": payer.pk,
            }
            response = api.post(f"{base}/api/v1/orders", json=body, timeout=30)
            if response.status_code == 401:
                from paysys.core.stack import not_ours

                raise CommandError(not_ours(base, settings.VAR_DIR))
            if response.status_code != 201:
                raise CommandError(
                    f"POST /api/v1/orders answered {response.status_code}: {response.text[:300]}"
                )
            return response.json()

        with ThreadPoolExecutor(8) as pool:
            orders = list(self._progress("orders", pool.map(create, range(payments)), payments))

        bank_orders, wallet_orders = orders[balance_count:], orders[:balance_count]
        now = datetime.now(UTC).isoformat()
        documents = [
            {
                "bank_trade_no": f"BT{stamp}{o['out_trade_no']}",
                "out_trade_no": o["out_trade_no"],
                "amount": o["amount"],
                "currency": o["currency"],
                "status": "SUCCESS",
                "paid_at": now,
            }
            for o in bank_orders
        ]
        clients, rate = options["clients"], options["rate"]
        interval = clients / rate if rate else 0.0  # each client's pace; the clients are staggered
        shares = [
            (
                base,
                settings.BANK_SHARED_SECRET,
                documents[i::clients],
                interval,
                i * interval / clients,
            )
            for i in range(clients)
        ]
        before = _resources()
        self.say(
            f"paying: {len(documents)} bank notifies from {options['clients']} processes, "
            f"{len(wallet_orders)} wallet payments ..."
        )
        sent: dict[str, float] = {}
        statuses: Counter = Counter()
        wallet_thread = threading.Thread(
            target=self._pay_from_wallets,
            args=(
                base,
                api.headers,
                payers,
                wallet_orders,
                sent,
                statuses,
                1 / (rate * options["balance_share"]) if rate and wallet_orders else 0,
                clients,
            ),
        )
        with multiprocessing.get_context("spawn").Pool(options["clients"]) as pool:
            pool.map(
                post_notifies, [(base, "", [], 0, 0)] * clients
            )  # started and imported before the clock
            started = time.time()
            wallet_thread.start()
            for share in pool.imap_unordered(post_notifies, shares):
                for out_trade_no, at, status in share:
                    sent[out_trade_no] = at
                    statuses[status] += 1
        wallet_thread.join()
        gateway_done = time.time()

        acks = self._wait_for_acks(
            work / "acks.log", {o["out_trade_no"] for o in orders}, options["timeout"]
        )
        after = _resources()
        outcome = self._check(merchant, orders, acks)
        # done when acknowledged and booked: the voucher may trail the acknowledgement
        finished = max(
            max((at for at, _ in acks.values()), default=time.time()), outcome.pop("settled_at")
        )
        latencies = [(acks[no][0] - sent[no]) * 1000 for no in sent if no in acks]
        done = len([no for no in sent if no in acks])
        elapsed = max(finished - started, 1e-6)
        return {
            "payments": len(orders),
            "done": done,
            "elapsed_s": round(elapsed, 1),
            "payments_per_s": round(done / elapsed, 1),
            "paced_per_s": rate or None,
            "broker": settings.CELERY_BROKER_URL.split(":", 1)[0],
            "cache": settings.CACHES["default"]["BACKEND"]
            .rsplit(".", 1)[-1]
            .removesuffix("Cache")
            .lower(),
            "gateway_accepted_per_s": round(len(documents) / max(gateway_done - started, 1e-6), 1),
            "answers": dict(statuses),
            "latency_ms": {
                "p50": round(_percentile(latencies, 0.5)),
                "p95": round(_percentile(latencies, 0.95)),
                "p99": round(_percentile(latencies, 0.99)),
            },
            "stages_ms_p50": self._stages(orders, sent, acks),
            "cpu_s_per_payment": {
                k: round(v / max(done, 1), 4) for k, v in _delta(before, after, "cpu").items()
            },
            "queries_per_payment": _per(_delta(before, after, "queries")["all"], done),
            **outcome,
        }

    def _pay_from_wallets(
        self, base, headers, payers, orders, sent, statuses, spacing, threads
    ) -> None:
        """From ``threads`` threads, as payers at their checkouts do (a balance payment answers
        when its TCC is decided); with a spacing (a paced run), spread over the run like the notifies."""
        tokens = {payer.pk: token for payer, token in payers}
        local, lock = threading.local(), threading.Lock()
        start = time.time()

        def pay(k_order) -> None:
            k, order = k_order
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.trust_env = False
                local.session.headers.update(headers)
            if spacing and (delay := start + k * spacing - time.time()) > 0:
                time.sleep(delay)
            at = time.time()
            # a 429 or 503 changed nothing: wait as it says and pay again (docs/api.md), as a payer would
            for _ in range(30):
                response = local.session.post(
                    f"{base}/api/v1/orders/{order['merchant_order_no']}/pay",
                    json={"method": "balance", "payer_token": tokens[order["payer_id"]]},
                    timeout=30,
                )
                if response.status_code not in (429, 503):
                    break
                time.sleep(min(float(response.headers.get("Retry-After") or 1), 5))
            with lock:
                sent[order["out_trade_no"]] = at
                statuses[response.status_code] += 1

        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(pay, enumerate(orders)))

    def _wait_for_acks(
        self, log: Path, expected: set[str], timeout: float
    ) -> dict[str, tuple[float, int]]:
        """out_trade_no -> (first acknowledgement time, how many notifications arrived for it)."""
        deadline = time.monotonic() + timeout
        acks: dict[str, tuple[float, int]] = {}
        while True:
            acks = {}
            for line in log.read_text().splitlines() if log.exists() else []:
                at, _, out_trade_no, verdict = line.split()
                if verdict == "ok" and out_trade_no in expected:
                    first, count = acks.get(out_trade_no, (float(at), 0))
                    acks[out_trade_no] = (min(first, float(at)), count + 1)
            self._bar("acknowledged", len(acks), len(expected))
            if len(acks) >= len(expected) or time.monotonic() > deadline:
                if not self.quiet:
                    self.stderr.write("")
                return acks
            time.sleep(0.5)

    # --- the figures ----------------------------------------------------------------------------

    def _stages(self, orders, sent, acks) -> dict[str, int]:
        """Median ms each stage adds, from the rows' own timestamps (one clock: this machine)."""
        from paysys.gateway.models import BankNotify

        numbers = [o["out_trade_no"] for o in orders]
        stored = dict(
            BankNotify.objects.filter(out_trade_no__in=numbers).values_list(
                "out_trade_no", "received_at"
            )
        )
        paid = dict(
            Order.objects.filter(out_trade_no__in=numbers, status=Order.Status.SUCCESS).values_list(
                "out_trade_no", "updated_at"
            )
        )
        credited = {
            no: at
            for no, at in FundEntry.objects.filter(
                out_trade_no__in=numbers, kind="posted"
            ).values_list("out_trade_no", "created_at")
        }
        awarded = {
            no: at
            for no, at in PointsEntry.objects.filter(
                out_trade_no__in=numbers, kind="posted"
            ).values_list("out_trade_no", "created_at")
        }
        booked = {
            source.split(":", 1)[1]: at
            for source, at in Voucher.objects.filter(
                source__in=[f"order.paid:{no}" for no in numbers]
            ).values_list("source", "created_at")
        }
        notified = dict(
            Notification.objects.filter(out_trade_no__in=numbers).values_list(
                "out_trade_no", "created_at"
            )
        )
        result = {}
        # each TCC participant from the notify's arrival (their confirms run side by side, so one
        # may land before the order's own); what the order's payment drives, from the order paid
        for stage, start, end in [
            ("gateway", None, stored),
            ("orders / TCC", stored, paid),
            ("funds", stored, credited),
            ("points", stored, awarded),
            ("accounting", paid, booked),
            ("notifications", paid, notified),
        ]:
            spans = [
                (end[no].timestamp() - (start[no].timestamp() if start else sent[no])) * 1000
                for no in numbers
                if end.get(no) and (start.get(no) if start else sent.get(no))
            ]
            if spans:
                result[stage] = max(0, round(statistics.median(spans)))
        spans = [
            (acks[no][0] - notified[no].timestamp()) * 1000
            for no in numbers
            if no in acks and no in notified
        ]
        if spans:
            result["delivery"] = round(statistics.median(spans))
        return result

    def _check(self, merchant, orders, acks, settle_seconds: float = 30.0) -> dict:
        """Every payment exactly once everywhere: its order SUCCESS, one merchant credit, one points
        posting, one voucher, one notification, and the merchant's acknowledgement. Accounting
        consumes ``order.paid`` beside notifications, so a voucher may trail the acknowledgement:
        what is missing is looked for again each second for up to ``settle_seconds``. Also returns
        when the last of those rows was written (``settled_at``): the run ends at the later of it
        and the last acknowledgement."""
        numbers = [o["out_trade_no"] for o in orders]
        deadline = time.monotonic() + settle_seconds
        while True:
            counts, settled_at = self._rows_per_payment(merchant, numbers)
            lost = sorted(
                no for no in numbers if no not in acks or not all(c[no] for c in counts.values())
            )
            if not lost or time.monotonic() > deadline:
                break
            time.sleep(1)
        doubled = sorted({no for c in counts.values() for no, n in c.items() if n > 1})
        return {
            "lost": len(lost),
            "doubled": len(doubled),
            "lost_examples": lost[:5],
            "doubled_examples": doubled[:5],
            "settled_at": settled_at,
        }

    @staticmethod
    def _rows_per_payment(merchant, numbers: list[str]) -> tuple[dict[str, Counter], float]:
        """How many of each row a payment left (by out_trade_no), and when the last was written."""
        paid = Order.objects.filter(out_trade_no__in=numbers, status=Order.Status.SUCCESS)
        credits = FundEntry.objects.filter(
            out_trade_no__in=numbers,
            kind="posted",
            direction="credit",
            account__owner_type="merchant",
            account__owner_id=merchant.pk,
        )
        points = PointsEntry.objects.filter(out_trade_no__in=numbers, kind="posted")
        vouchers = Voucher.objects.filter(source__in=[f"order.paid:{no}" for no in numbers])
        notifications = Notification.objects.filter(out_trade_no__in=numbers)
        counts = {
            "paid": Counter(paid.values_list("out_trade_no", flat=True)),
            "credited": Counter(credits.values_list("out_trade_no", flat=True)),
            "awarded": Counter(points.values_list("out_trade_no", flat=True)),
            "booked": Counter(
                s.split(":", 1)[1] for s in vouchers.values_list("source", flat=True)
            ),
            "notified": Counter(notifications.values_list("out_trade_no", flat=True)),
        }
        last = [
            paid.aggregate(at=Max("updated_at"))["at"],
            credits.aggregate(at=Max("created_at"))["at"],
            points.aggregate(at=Max("created_at"))["at"],
            vouchers.aggregate(at=Max("created_at"))["at"],
        ]
        return counts, max((at.timestamp() for at in last if at), default=0.0)

    def _reconcile(self, settle_seconds: float = 30.0) -> tuple[bool, str]:
        """``reconcile --strict``, once the platform has settled: the last payments' bookkeeping
        (a TCC transaction's final status, a message marked consumed) may still be in flight a
        moment after the merchant acknowledged. Not clean but consistent (only in flight) is
        checked again, each second for up to ``settle_seconds``, and once settled the verdict is
        asked again; inconsistent is final at once. Settled at once, reconcile runs once (it reads
        the whole history: minutes with millions of rows)."""
        clean, text = self._reconcile_strict()
        if clean:
            return clean, text
        deadline = time.monotonic() + settle_seconds
        # (on stderr with --json too: nothing else would say why the command is quiet meanwhile)
        self.stderr.write(
            f"reconcile --strict: not clean yet; waiting up to {settle_seconds:g} s for what is "
            "still in flight to settle ..."
        )
        while time.monotonic() < deadline:
            report = reconcile(grace=60.0)
            if not report.consistent:
                break
            if report.settled:
                clean, text = self._reconcile_strict()
                break
            time.sleep(1)
        if not clean:
            self.say(text)
        return clean, text

    def _reconcile_strict(self) -> tuple[bool, str]:
        out = StringIO()
        try:
            call_command("reconcile", "--strict", stdout=out, stderr=out)
            clean = True
        except SystemExit as exit:
            clean = not exit.code
        except CommandError:
            clean = False
        return clean, out.getvalue()[-3000:]

    # --- refunds (--refunds) -------------------------------------------------------------------

    def _run_refunds(self, base, merchant, api_key, count: int, options, work: Path) -> dict:
        """Refund ``count`` wallet-paid orders (alternately whole and half), then wait for each
        refund's notification to be acknowledged; check each refund SUCCEEDED once."""
        paid = list(
            Order.objects.filter(
                merchant_id=merchant.pk, status=Order.Status.SUCCESS, pay_method="balance"
            ).order_by("id")[:count]
        )
        plan = [
            (order, order.amount if i % 2 == 0 else order.amount // 2)
            for i, order in enumerate(paid)
        ]
        self.say(
            f"refunding {len(plan)} paid orders ({sum(a == o.amount for o, a in plan)} whole, the others half) ..."
        )
        local = threading.local()
        answers: Counter = Counter()

        def refund(order_amount) -> str:
            order, amount = order_amount
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.trust_env = False
                local.session.headers["Authorization"] = f"Bearer {api_key}"
            body = {
                "merchant_refund_no": f"{order.merchant_order_no}-r",
                "amount": amount,
                "reason": "bench",
            }
            for _ in range(20):  # a 503 changed nothing: try again, as a merchant would
                response = local.session.post(
                    f"{base}/api/v1/orders/{order.merchant_order_no}/refunds", json=body, timeout=60
                )
                answers[response.status_code] += 1
                if response.status_code != 503:
                    break
                time.sleep(0.5)
            if response.status_code not in (200, 201):
                raise CommandError(
                    f"POST .../refunds of {order.merchant_order_no} answered {response.status_code}: "
                    f"{response.text[:300]}"
                )
            return response.json()["refund_no"]

        started = time.time()
        with ThreadPoolExecutor(max(1, options["clients"])) as pool:
            refund_nos = list(pool.map(refund, plan))
        acks = self._wait_for_acks(work / "acks.log", set(refund_nos), options["timeout"])
        finished = max((at for at, _ in acks.values()), default=time.time())
        return {
            "refunds": len(plan),
            "answers": dict(answers),
            "elapsed_s": round(finished - started, 1),
            "refunds_per_s": round(len(acks) / max(finished - started, 1e-6), 1),
            **_refunds_check(merchant, plan, refund_nos, acks),
        }

    # --- output ---------------------------------------------------------------------------------

    def _report(self, r: dict) -> None:
        if self.quiet:
            self.stdout.write(json.dumps(r))
            return
        lines = [
            f"payments                 {r['done']} of {r['payments']} done in {r['elapsed_s']} s "
            f"(broker {r['broker']}, cache {r['cache']})",
            f"end to end               {r['payments_per_s']} payments/s (gateway accepted {r['gateway_accepted_per_s']} notifies/s"
            + (f"; sent at a paced {r['paced_per_s']:g}/s)" if r["paced_per_s"] else ")"),
            f"notify -> merchant ack   p50 {r['latency_ms']['p50']} ms, p95 {r['latency_ms']['p95']} ms, p99 {r['latency_ms']['p99']} ms",
            "stage medians (ms)       "
            + ", ".join(f"{k} {v}" for k, v in r["stages_ms_p50"].items()),
            "CPU s per payment        "
            + ", ".join(f"{k} {v}" for k, v in r["cpu_s_per_payment"].items()),
            f"queries per payment      {r['queries_per_payment'] if r['queries_per_payment'] is not None else 'n/a (MariaDB only)'}",
        ]
        if r.get("baseline_per_s"):
            lines.append(
                "monolith                 "
                + ", ".join(f"{k} {v}/s" for k, v in r["baseline"].items())
                + f"  ->  ratio {r['ratio']}"
            )
        if r.get("refunds"):
            lines.append(_refunds_line(r["refunds"]))
        lines.append(
            f"lost {r['lost']}, doubled {r['doubled']}, reconcile --strict "
            f"{'clean' if r['reconcile_strict'] else 'NOT CLEAN'}"
        )
        self.stdout.write("\n".join(lines))

    def say(self, text: str) -> None:
        if not self.quiet:
            self.stderr.write(text)

    def _bar(self, what: str, done: int, total: int) -> None:
        if self.quiet:
            return
        filled = int(30 * done / max(total, 1))
        self.stderr.write(
            f"\r  {what:<13} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", ending=""
        )
        self.stderr.flush()

    def _progress(self, what, items, total):
        for i, item in enumerate(items, 1):
            if i % 50 == 0 or i == total:
                self._bar(what, i, total)
            yield item
        if not self.quiet:
            self.stderr.write("")


def _refund_count(payments: int, options) -> int:
    """How many of the paid orders ``--refunds`` refunds; refused when the wallet-paid ones are too few."""
    share = options["refunds"]
    if not 0 <= share <= 100:
        raise CommandError("--refunds is a share of the paid orders: 0 to 100")
    count = round(payments * share / 100)
    if count > int(payments * options["balance_share"]):
        raise CommandError(
            f"--refunds {share:g} refunds {count} orders, but only {int(payments * options['balance_share'])} "
            "are paid from wallets (--balance-share): the bench's bank payments are notifies it posts "
            "itself, which the bank simulator never saw, so it would refuse their refunds"
        )
    return count


def _refunds_check(merchant, plan, refund_nos: list[str], acks: dict) -> dict:
    """Each refund SUCCEEDED, its order's refunded amount exactly it, one merchant debit, one
    voucher and one notification per refund: what is not is lost or doubled."""
    from orders.models import Refund

    refunds = {r.refund_no: r for r in Refund.objects.filter(refund_no__in=refund_nos)}
    refunded = dict(
        Order.objects.filter(pk__in=[o.pk for o, _ in plan]).values_list("pk", "refunded_amount")
    )
    debits = Counter(
        FundEntry.objects.filter(
            kind="posted",
            direction="debit",
            out_trade_no__in=[o.out_trade_no for o, _ in plan],
            account__owner_type="merchant",
            account__owner_id=merchant.pk,
        ).values_list("out_trade_no", flat=True)
    )
    vouchers = Counter(
        Voucher.objects.filter(
            source__in=[f"refund.finished:{no}" for no in refund_nos]
        ).values_list("source", flat=True)
    )
    notices = Counter(
        Notification.objects.filter(
            event_type__in=[f"refund.succeeded:{no}" for no in refund_nos]
        ).values_list("event_type", flat=True)
    )
    lost, doubled = [], []
    for (order, amount), no in zip(plan, refund_nos, strict=False):
        refund = refunds.get(no)
        if (
            refund is None
            or refund.status != "SUCCEEDED"
            or refunded[order.pk] != amount
            or no not in acks
        ):
            lost.append(no)
        elif (
            debits[order.out_trade_no],
            vouchers[f"refund.finished:{no}"],
            notices[f"refund.succeeded:{no}"],
        ) != (1, 1, 1):
            doubled.append(no)
    return {
        "succeeded": sum(r.status == "SUCCEEDED" for r in refunds.values()),
        "lost": len(lost),
        "doubled": len(doubled),
        "lost_examples": lost[:5],
        "doubled_examples": doubled[:5],
    }


def _refunds_line(r: dict) -> str:
    return (
        f"refunds                  {r['succeeded']} of {r['refunds']} SUCCEEDED in {r['elapsed_s']} s: "
        f"{r['refunds_per_s']} refunds/s; lost {r['lost']}, doubled {r['doubled']}"
    )


def _refunds_verdict(r: dict | None) -> None:
    if r and (r["lost"] or r["doubled"] or r["succeeded"] != r["refunds"]):
        raise CommandError(
            f"refunds: {r['lost']} lost, {r['doubled']} doubled, {r['succeeded']} of {r['refunds']} "
            f"SUCCEEDED (examples: {r['lost_examples'] + r['doubled_examples']})"
        )


def _per(total, count: int):
    return None if total is None else round(total / max(count, 1), 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- resources: CPU seconds of the stack's processes, queries of the database server --------------

PROCESS_GROUPS = {
    "web": ("manage.py serve", "multiprocessing.spawn"),
    "workers": ("celery",),
    "mariadb": ("mariadbd", "mysqld"),
    "redis": ("redis-server",),
}


def _resources() -> dict:
    """CPU seconds so far of this stack's processes (web and workers: those running in this
    checkout) and of the servers it uses (MariaDB, Redis: only when it uses them; on a shared
    machine they serve others too), and the database server's query count (MariaDB only)."""
    mysql = connections["default"].vendor == "mysql"
    groups = (
        {"web", "workers"}
        | ({"mariadb"} if mysql else set())
        | ({"redis"} if settings.CELERY_BROKER_URL.startswith("redis") else set())
    )
    cpu = Counter({group: 0.0 for group in groups})
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        for group, needles in PROCESS_GROUPS.items():
            ours = group in ("mariadb", "redis") or cwd == str(settings.BASE_DIR)
            if (
                group in groups
                and ours
                and any(n in cmdline for n in needles)
                and int(pid) != os.getpid()
            ):
                cpu[group] += (int(fields[11]) + int(fields[12])) / tick
                break
    queries = None
    if mysql:
        with connections["default"].cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            queries = int(cursor.fetchone()[1])
    return {"cpu": cpu, "queries": {"all": queries}}


def _delta(before: dict, after: dict, what: str) -> dict:
    keys = set(before[what]) | set(after[what])
    return {
        k: None if before[what].get(k) is None else after[what].get(k, 0) - before[what][k]
        for k in sorted(keys)
    }
