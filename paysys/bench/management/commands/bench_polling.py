"""How long order polling takes, and whose worker it holds.

    manage.py bench_polling [--orders 1000] [--concurrency 8] [--payments 300]

Creates ``--orders`` unpaid orders whose poll is due (what 1,000 new orders look like two
seconds later), serves the bank simulator's query API over HTTP from a child process (a bank is
another machine: it must not share this process's interpreter lock), and times one
polling pass asking the bank one question at a time (as before issue 6) and
``--concurrency`` at a time. It also prints which queue the pass runs on: sharing the ``orders``
queue, its whole duration was time the orders worker spent not applying payments.

With ``--payments N`` (full stack: a real broker) it then measures that from outside, with real
Celery workers: a polling pass over the due orders is enqueued, then N bank notifies arrive
through the gateway's service; it times until all N orders are paid. "before": one worker
consumes ``orders`` and ``polling`` (polling on the payments' worker, as before issue 6);
"after": the ``orders`` and ``polling`` workers of the Procfile. Everything it writes is deleted
at the end. Needs the sandbox (SANDBOX_ENABLED).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.db import connections
from django.utils import timezone

from orders.creation import new_out_trade_no, order_create
from orders.models import Order, PaymentRecord
from orders.polling import orders_poll_bank
from paysys.bench.workers import start_worker
from paysys.celery import app
from paysys.core.models import Merchant, Payer
from paysys.core.services import merchant_create, payer_create
from paysys.gateway.models import BankNotify
from paysys.gateway.services import bank_notify_store
from paysys.messaging.models import InboxEntry, Message

BENCH_MERCHANT_ID = -4242  # no real merchant has a negative id


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Command(BaseCommand):
    help = "Time one order-polling pass over N due orders, one question at a time vs concurrently."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=1000)
        parser.add_argument("--concurrency", type=int, default=settings.ORDER_POLL_CONCURRENCY)
        parser.add_argument(
            "--payments", type=int, default=0, help="also measure payments end to end (full stack)"
        )
        parser.add_argument(
            "--max-per-second",
            type=int,
            default=settings.ORDER_POLL_MAX_PER_SECOND,
            help="the bank-question rate bound (ORDER_POLL_MAX_PER_SECOND); raise it to time the passes themselves",
        )

    def handle(self, *args, **opts):
        if not settings.SANDBOX_ENABLED:
            raise CommandError("the bank simulator is off (SANDBOX_ENABLED): nothing to ask")
        settings.PUBLIC_RATE_LIMITS = {**settings.PUBLIC_RATE_LIMITS, "sandbox": "1000000/min"}
        settings.ORDER_POLL_MAX_PER_SECOND = opts["max_per_second"]
        os.environ["ORDER_POLL_MAX_PER_SECOND"] = str(
            opts["max_per_second"]
        )  # and in the workers it starts
        for database in settings.DATABASES.values():
            # the bank's server answers each question in a new thread: a kept connection would leak
            database["CONN_MAX_AGE"] = 0
        server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
        server.set_app(get_wsgi_application())
        logging.getLogger("django.request").setLevel(
            logging.ERROR
        )  # every unpaid order is a signed 404
        connections.close_all()  # the child must not share this process's database connections
        bank = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
        bank.start()
        settings.BANK_QUERY_URL = f"http://127.0.0.1:{server.server_port}/sandbox/bank/payments/"
        count = opts["orders"]
        self.started_at = timezone.now()
        try:
            self._create(count)
            results = []
            for concurrency in (1, opts["concurrency"]):
                settings.ORDER_POLL_CONCURRENCY = concurrency
                Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).update(
                    next_poll_at=timezone.now() - timedelta(seconds=1)
                )
                started = time.monotonic()
                asked = 0
                while asked < count:  # passes of up to 200 orders, as beat runs them
                    done = orders_poll_bank(limit=200, budget_seconds=600)
                    if not done:
                        break
                    asked += done
                seconds = time.monotonic() - started
                results.append((concurrency, asked, seconds))
                self.stdout.write(
                    f"polling {asked} due orders, {concurrency} question(s) at a time: {seconds:.2f} s "
                    f"({asked / seconds:.0f} questions/s)"
                )
            queue = app.amqp.router.route({}, "orders.poll_bank")["queue"].name
            self.stdout.write(
                f"orders.poll_bank runs on queue '{queue}'; payments (bank.payment_succeeded) on 'orders'"
            )
            before = results[0][2]
            self.stdout.write(
                f"orders worker held by polling {count} orders: {before:.2f} s before (same queue, one at a time), "
                f"0 s now ({results[-1][2]:.2f} s in the polling worker)"
            )
            if opts["payments"]:
                os.environ["BANK_QUERY_URL"] = (
                    settings.BANK_QUERY_URL
                )  # the workers ask the same bank
                for mode, concurrency in (("before", 1), ("after", opts["concurrency"])):
                    self._end_to_end(mode, count, opts["payments"], concurrency)
        finally:
            self._cleanup()
            bank.terminate()
            bank.join(10)
            server.server_close()

    def _end_to_end(self, mode: str, due: int, payments: int, concurrency: int) -> None:
        if settings.CELERY_BROKER_URL.startswith("filesystem"):
            raise CommandError("--payments needs the full stack (CELERY_BROKER_URL=redis://...)")
        app.control.purge()
        queues = ["core", "orders,polling"] if mode == "before" else ["core", "orders", "polling"]
        workers = [self._worker(q, concurrency) for q in queues]
        try:
            merchant, _ = merchant_create(
                name="bench-polling", notify_url="https://shop.example/notify"
            )
            payer = payer_create(name="bench-polling")
            payable = [
                order_create(
                    merchant=merchant,
                    merchant_order_no=f"BENCH-PAY-{mode}-{i}",
                    amount=100,
                    currency="CNY",
                    subject="bench",
                    payer_id=payer.pk,
                )[0]
                for i in range(payments)
            ]
            Order.objects.filter(pk__in=[o.pk for o in payable]).update(
                next_poll_at=None
            )  # paid by notify only
            Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).update(
                next_poll_at=timezone.now() - timedelta(seconds=1)
            )
            for _ in range(
                -(-due // 200)
            ):  # the passes beat would have started by now, 200 orders each
                app.send_task("orders.poll_bank")
            time.sleep(0.5)  # the first pass has started
            started = time.monotonic()
            for order in payable:
                bank_notify_store(
                    data={
                        "bank_trade_no": "BB" + order.out_trade_no,
                        "out_trade_no": order.out_trade_no,
                        "amount": order.amount,
                        "currency": order.currency,
                        "status": "SUCCESS",
                        "paid_at": timezone.now(),
                    },
                    raw_body="{}",
                    signature="bench",
                )
            sent = time.monotonic() - started
            ids = [o.pk for o in payable]
            while Order.objects.filter(pk__in=ids, status=Order.Status.SUCCESS).count() < payments:
                if time.monotonic() - started > 300:
                    raise CommandError(
                        f"{mode}: payments not all applied after 300 s (worker logs: {self.log_dir})"
                    )
                time.sleep(0.05)
            seconds = time.monotonic() - started
            self.stdout.write(
                f"{mode}: {payments} payments behind a polling of {due} orders ({'one worker for orders + polling' if mode == 'before' else 'orders and polling workers'}): "
                f"all paid {seconds:.2f} s after the first notify ({payments / seconds:.0f} payments/s; notifies took {sent:.2f} s to arrive)"
            )
        finally:
            for worker in workers:
                os.killpg(worker.pid, signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
            app.control.purge()
            self._cleanup(keep_due=True)

    def _worker(self, queues: str, concurrency: int) -> subprocess.Popen:
        self.log_dir = getattr(self, "log_dir", None) or Path(
            tempfile.mkdtemp(prefix="bench-polling-")
        )
        log_path = self.log_dir / f"worker-{queues.replace(',', '+')}.log"
        env = {**os.environ, "ORDER_POLL_CONCURRENCY": str(concurrency)}
        proc = start_worker(
            queues,
            name=f"bench-{queues}-{os.getpid()}",
            concurrency=1,
            loglevel="INFO",
            env=env,
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise CommandError(f"worker {queues} did not start: {log_path}")
            time.sleep(0.2)
        return proc

    def _cleanup(self, keep_due: bool = False) -> None:
        bench = Order.objects.filter(merchant_order_no__startswith="BENCH-PAY-")
        out_trade_nos = list(bench.values_list("out_trade_no", flat=True))
        PaymentRecord.objects.filter(out_trade_no__in=out_trade_nos).delete()
        BankNotify.objects.filter(out_trade_no__in=out_trade_nos).delete()
        since = getattr(self, "started_at", None)
        if since is not None:  # the messages the bench's payments made, and their inbox rows
            for alias in ("default", "orders"):
                Message.objects.using(alias).filter(
                    topic__in=["bank.payment_succeeded", "order.paid"], created_at__gte=since
                ).delete()
            InboxEntry.objects.using("orders").filter(
                topic="bank.payment_succeeded", received_at__gte=since
            ).delete()
        bench.delete()
        merchants = list(Merchant.objects.filter(name="bench-polling").values_list("pk", flat=True))
        Order.objects.filter(merchant_id__in=merchants).delete()
        Merchant.objects.filter(pk__in=merchants).delete()
        Payer.objects.filter(name="bench-polling").delete()
        if not keep_due:
            Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).delete()

    def _create(self, count: int) -> None:
        now = timezone.now()
        Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).delete()
        Order.objects.bulk_create(
            [
                Order(
                    out_trade_no=new_out_trade_no(),
                    merchant_id=BENCH_MERCHANT_ID,
                    merchant_order_no=f"BENCH-POLL-{i}",
                    amount=100,
                    currency="CNY",
                    subject="bench",
                    payer_id=1,
                    expires_at=now + timedelta(minutes=30),
                    next_poll_at=now,
                )
                for i in range(count)
            ],
            batch_size=500,
        )
