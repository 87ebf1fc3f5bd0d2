"""How long order polling takes, and whose worker it holds.

    manage.py bench_polling [--orders 1000] [--concurrency 8]

Creates ``--orders`` unpaid orders whose poll is due (what 1,000 new orders look like two
seconds later), serves the bank simulator's query API over HTTP from a child process (a bank is
another machine: it must not share this process's interpreter lock), and times one
polling pass asking the bank one question at a time (as before issue 6) and
``--concurrency`` at a time. It also prints which queue the pass runs on: sharing the ``orders``
queue, its whole duration was time the orders worker spent not applying payments. Everything it
writes is deleted at the end. Needs the sandbox (SANDBOX_ENABLED).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.db import connections
from django.utils import timezone

from orders.models import Order
from orders.services import new_out_trade_no, orders_poll_bank
from paysys.celery import app

BENCH_MERCHANT_ID = -4242  # no real merchant has a negative id


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Command(BaseCommand):
    help = "Time one order-polling pass over N due orders, one question at a time vs concurrently."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=1000)
        parser.add_argument("--concurrency", type=int, default=settings.ORDER_POLL_CONCURRENCY)

    def handle(self, *args, **opts):
        if not settings.SANDBOX_ENABLED:
            raise CommandError("the bank simulator is off (SANDBOX_ENABLED): nothing to ask")
        settings.PUBLIC_RATE_LIMITS = {**settings.PUBLIC_RATE_LIMITS, "sandbox": "1000000/min"}
        server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
        server.set_app(get_wsgi_application())
        logging.getLogger("django.request").setLevel(logging.ERROR)  # every unpaid order is a signed 404
        connections.close_all()  # the child must not share this process's database connections
        bank = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
        bank.start()
        settings.BANK_QUERY_URL = f"http://127.0.0.1:{server.server_port}/sandbox/bank/payments/"
        count = opts["orders"]
        try:
            self._create(count)
            results = []
            for concurrency in (1, opts["concurrency"]):
                settings.ORDER_POLL_CONCURRENCY = concurrency
                Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).update(next_poll_at=timezone.now() - timedelta(seconds=1))
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
            self.stdout.write(f"orders.poll_bank runs on queue '{queue}'; payments (bank.payment_succeeded) on 'orders'")
            before = results[0][2]
            self.stdout.write(
                f"orders worker held by polling {count} orders: {before:.2f} s before (same queue, one at a time), "
                f"0 s now ({results[-1][2]:.2f} s in the polling worker)"
            )
        finally:
            Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).delete()
            bank.terminate()
            bank.join(10)
            server.server_close()

    def _create(self, count: int) -> None:
        now = timezone.now()
        Order.objects.filter(merchant_id=BENCH_MERCHANT_ID).delete()
        Order.objects.bulk_create(
            [
                Order(
                    out_trade_no=new_out_trade_no(), merchant_id=BENCH_MERCHANT_ID, merchant_order_no=f"BENCH-POLL-{i}",
                    amount=100, currency="CNY", subject="bench", payer_id=1, expires_at=now + timedelta(minutes=30),
                    next_poll_at=now,
                )
                for i in range(count)
            ],
            batch_size=500,
        )
