"""Throughput of TCC ``complete_order``, against the same writes without TCC.

    manage.py bench_tcc [--payments 3000] [--batch 50] [--initiators 2] [--threads 4]
                        [--worker-processes 1] [--merchants 8] [--payers 64] [--json]

Uses the real participants (``orders.pay``, ``funds.credit``, ``points.award``) with their own
workers, one per queue (``orders``, ``funds``, ``points``; ``--worker-processes`` pool processes
each, 1 as in the Procfile). Measures, in one run:

* **TCC**: ``--initiators`` processes of ``--threads`` threads run ``tcc.run_many("complete_order",
  ...)`` over ``--batch`` payments at a time (as a consumer does with a delivery batch;
  ``--batch 1`` is one ``tcc.run`` per payment) for ``--payments`` bank payments of fresh
  orders; TCC/s = payments / (first run -> last transaction CONFIRMED), so phase two (batched
  confirms in the participants' workers) is inside the figure;
* **without TCC**: the same processes do the same business writes for as many other orders,
  each payment as one local transaction per database (orders, funds, points: a single
  transaction cannot span three databases), calling the participants' own try and confirm
  code back to back, with no coordinator, barrier or phase-two task;
* **without TCC, batched**: the same again, ``--batch`` payments per local transaction per
  database, so the ops run set-based exactly as in the TCC mode: what TCC itself costs;
* the ratios TCC / without (DTM publishes 341 / 551 = 0.62 for its saga with barrier).

Run it on a stack of its own (as ``bench`` in CI): it pays real orders of bench merchants and
deletes every row it wrote at the end, but an ``order.paid`` delivery already relayed to the
accounting or notifications queue would be consumed by such a worker on the same broker.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import subprocess
import time
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections, transaction
from django.utils import timezone

from paysys.bench.workers import start_worker
from paysys.tcc import phase_two
from paysys.tcc.models import Barrier, GlobalTransaction
from paysys.tcc.registry import BranchOp, get_participant

Status = GlobalTransaction.Status


class Command(BaseCommand):
    help = "Measure complete_order TCC transactions/s against the same writes without TCC."

    def add_arguments(self, parser):
        parser.add_argument("--payments", type=int, default=3000, help="payments per mode")
        parser.add_argument(
            "--batch", type=int, default=50, help="payments per tcc.run_many call (1: tcc.run)"
        )
        parser.add_argument("--initiators", type=int, default=2, help="initiator processes")
        parser.add_argument("--threads", type=int, default=4, help="initiator threads per process")
        parser.add_argument(
            "--worker-processes",
            type=int,
            default=1,
            help="pool processes of each participant's worker",
        )
        parser.add_argument("--merchants", type=int, default=8)
        parser.add_argument("--payers", type=int, default=64)
        parser.add_argument("--json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, **opts):
        from orders.models import PayMethod

        if settings.CELERY_BROKER_URL.startswith("filesystem"):
            self._say(
                opts,
                self.style.WARNING(
                    "embedded broker: figures are not representative; use MariaDB + Redis"
                ),
            )
        self.run_id = uuid.uuid4().hex[:8]
        self.threads = opts["threads"]
        self.batch = max(1, opts["batch"])
        self.merchants, self.payers = self._owners(opts["merchants"], opts["payers"])
        total = opts["payments"]
        warmup = max(opts["merchants"], opts["payers"])
        orders = self._orders(3 * total + warmup)
        self.order_ids = [o.pk for o in orders]
        self.outs = [o.out_trade_no for o in orders]
        from orders.payments import pay_branches

        now = timezone.now().isoformat()
        payments = [
            (
                f"bench:{self.run_id}:{o.pk}",
                [
                    (b.action, b.payload)
                    for b in pay_branches(
                        o,
                        method=PayMethod.BANK,
                        bank_trade_no=f"BB{self.run_id}{o.pk}",
                        paid_at=now,
                        source="bench",
                    )
                ],
            )
            for o in orders
        ]
        workers = self._start_workers(opts["worker_processes"])
        try:
            time.sleep(4)  # let the pools start before the clock does
            self._run(
                self._direct_worker, payments[:warmup], opts["initiators"]
            )  # accounts exist in both modes
            tcc_seconds, decided_seconds = self._measure_tcc(
                payments[warmup : warmup + total], opts["initiators"]
            )
            direct_seconds = self._run(
                self._direct_worker,
                payments[warmup + total : warmup + 2 * total],
                opts["initiators"],
            )
            rest = payments[warmup + 2 * total :]
            batched_seconds = self._run(
                self._direct_worker,
                [rest[i : i + self.batch] for i in range(0, total, self.batch)],
                opts["initiators"],
                batched=True,
            )
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(timeout=30)
            self._say(opts, "cleaning up bench rows ...")
            self._cleanup()
        figures = {
            "payments": total,
            "initiators": opts["initiators"],
            "threads": opts["threads"],
            "batch": self.batch,
            "worker_processes": opts["worker_processes"],
            "tcc_per_second": round(total / tcc_seconds, 1),
            "tcc_decisions_per_second": round(total / decided_seconds, 1),
            "without_tcc_per_second": round(total / direct_seconds, 1),
            "without_tcc_batched_per_second": round(total / batched_seconds, 1),
            "ratio": round(direct_seconds / tcc_seconds, 3),
            "ratio_batched": round(batched_seconds / tcc_seconds, 3),
        }
        if opts["json"]:
            self.stdout.write(json.dumps(figures))
        else:
            self.stdout.write(
                f"complete_order, {total} payments, {opts['initiators']} initiator processes x {opts['threads']} threads, "
                f"{self.batch} per call:\n"
                f"  TCC (tries + decision + phase two confirmed): {figures['tcc_per_second']:8.1f} /s\n"
                f"  TCC decisions committed (initiators' view):   {figures['tcc_decisions_per_second']:8.1f} /s\n"
                f"  same writes without TCC, one per transaction: {figures['without_tcc_per_second']:8.1f} /s\n"
                f"  same writes without TCC, {self.batch:3d} per transaction: {figures['without_tcc_batched_per_second']:8.1f} /s\n"
                f"  ratio TCC / without (one per transaction):    {figures['ratio']:8.3f}\n"
                f"  ratio TCC / without (batched alike):          {figures['ratio_batched']:8.3f}"
            )

    def _say(self, opts, text: str) -> None:
        (self.stderr if opts["json"] else self.stdout).write(text)

    # --- set-up --------------------------------------------------------------------------------

    def _owners(self, merchants: int, payers: int):
        from paysys.core.services import merchant_create, payer_create

        made = [
            merchant_create(
                name=f"bench-tcc-{self.run_id}-{i}", notify_url="http://127.0.0.1:9/notify"
            )[0]
            for i in range(merchants)
        ]
        return made, [payer_create(name=f"bench-tcc-{self.run_id}-{i}") for i in range(payers)]

    def _orders(self, count: int):
        from datetime import timedelta

        from orders.creation import new_out_trade_no
        from orders.models import Order

        expires = timezone.now() + timedelta(hours=1)
        rows = [
            Order(
                out_trade_no=new_out_trade_no(),
                merchant_id=self.merchants[i % len(self.merchants)].pk,
                merchant_order_no=f"bench-{self.run_id}-{i}",
                amount=1000 + i % 900,
                currency="CNY",
                subject="bench",
                payer_id=self.payers[i % len(self.payers)].pk,
                expires_at=expires,
            )
            for i in range(count)
        ]
        Order.objects.bulk_create(rows, batch_size=1000)
        return list(
            Order.objects.filter(merchant_order_no__startswith=f"bench-{self.run_id}-").order_by(
                "pk"
            )
        )

    def _start_workers(self, processes: int) -> list[subprocess.Popen]:
        return [
            start_worker(
                queue,
                name=f"bench-tcc-{queue}-{os.getpid()}",
                concurrency=processes,
                pool="prefork",
            )
            for queue in ("orders", "funds", "points")
        ]

    # --- measuring -------------------------------------------------------------------------------

    def _run(self, target, payments: list, initiators: int, **kwargs) -> float:
        """Seconds for ``initiators`` forked processes, each with ``--threads`` threads, to run
        ``target`` over their share (threads of one process share its phase-two dispatcher, as
        a web or worker process's requests and consumers do)."""
        connections.close_all()  # children open their own connections
        fork = multiprocessing.get_context("fork")
        started = time.monotonic()
        procs = [
            fork.Process(
                target=_threaded,
                args=(functools.partial(target, **kwargs), payments[i::initiators], self.threads),
            )
            for i in range(initiators)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        elapsed = time.monotonic() - started
        failed = [proc.exitcode for proc in procs if proc.exitcode]
        if failed:
            raise RuntimeError(f"initiator processes failed: exit codes {failed}")
        return elapsed

    def _measure_tcc(self, payments: list, initiators: int) -> tuple[float, float]:
        started = time.monotonic()
        batch = self.batch
        decided = self._run(
            self._tcc_worker,
            [payments[i : i + batch] for i in range(0, len(payments), batch)],
            initiators,
        )
        keys = [key for key, _ in payments]
        pending = GlobalTransaction.objects.filter(
            business_key__startswith=f"bench:{self.run_id}:"
        ).exclude(status=Status.CONFIRMED)
        deadline = time.monotonic() + 600
        while pending.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"phase two did not finish: {pending.count()} of {len(keys)} not confirmed"
                )
            time.sleep(0.05)
        return time.monotonic() - started, decided

    @staticmethod
    def _tcc_worker(batches: list) -> None:
        from paysys import tcc

        for batch in batches:
            jobs = [
                (key, [tcc.Branch(action, payload) for action, payload in branches])
                for key, branches in batch
            ]
            failed = [
                r for r in tcc.run_many("complete_order", jobs) if isinstance(r, tcc.TryFailed)
            ]
            if failed:
                raise failed[0]
        connections.close_all()

    @staticmethod
    def _direct_worker(payments: list, batched: bool = False) -> None:
        """The same business writes, no TCC: per payment (or per batch of payments) one local
        transaction per database, each participant's try and confirm back to back."""
        for batch in payments if batched else [[payment] for payment in payments]:
            by_action: dict[str, list] = {}
            for _key, branches in batch:
                xid = uuid.uuid4().hex
                for action, payload in branches:
                    by_action.setdefault(action, []).append(BranchOp(xid, payload))
            for action, ops in by_action.items():
                spec = get_participant(action)
                with transaction.atomic(using=spec.alias):
                    spec.apply("try", ops)
                    spec.apply("confirm", ops)
        connections.close_all()

    # --- clean-up --------------------------------------------------------------------------------

    def _cleanup(self) -> None:
        from accounts.models import FundAccount, FundEntry, PointsAccount, PointsEntry
        from orders.models import Order, PaymentRecord
        from paysys.core.models import Merchant, Payer
        from paysys.messaging.models import Message

        prefix = f"bench-tcc-{self.run_id}-"
        merchant_ids = list(
            Merchant.objects.filter(name__startswith=prefix).values_list("pk", flat=True)
        )
        payer_ids = list(Payer.objects.filter(name__startswith=prefix).values_list("pk", flat=True))
        xids = list(
            GlobalTransaction.objects.filter(
                business_key__startswith=f"bench:{self.run_id}:"
            ).values_list("xid", flat=True)
        )
        for start in range(0, len(self.outs), 1000):
            outs = self.outs[start : start + 1000]
            Message.objects.using("orders").filter(payload__out_trade_no__in=outs).delete()
            PaymentRecord.objects.filter(out_trade_no__in=outs).delete()
            Order.objects.filter(out_trade_no__in=outs).delete()
            FundEntry.objects.filter(out_trade_no__in=outs).delete()
            PointsEntry.objects.filter(out_trade_no__in=outs).delete()
        for start in range(0, len(xids), 1000):
            chunk = xids[start : start + 1000]
            for alias in ("orders", "funds", "points"):
                Barrier.objects.using(alias).filter(xid__in=chunk).delete()
            GlobalTransaction.objects.filter(xid__in=chunk).delete()
        FundAccount.objects.filter(owner_type="merchant", owner_id__in=merchant_ids).delete()
        FundAccount.objects.filter(owner_type="payer", owner_id__in=payer_ids).delete()
        PointsAccount.objects.filter(payer_id__in=payer_ids).delete()
        Merchant.objects.filter(pk__in=merchant_ids).delete()
        Payer.objects.filter(pk__in=payer_ids).delete()


def _threaded(target, payments: list, threads: int) -> None:
    """One initiator process: ``threads`` threads share ``payments``."""
    import threading

    errors: list[BaseException] = []

    def run(share):
        try:
            target(share)
        except BaseException as exc:  # noqa: BLE001 - fails the process below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(payments[i::threads],)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    phase_two.flush_dispatch(30)
    if errors:
        raise errors[0]
