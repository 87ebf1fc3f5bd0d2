"""``manage.py bench_history``: store history in a benchmark stack's databases, and time /metrics.

    manage.py bench_history [--orders N] [--messages M [--age-days D]] [--metrics K] [--yes-fill-this-database]

Fills the databases the environment names (``DATABASE_URL``: a running stack's, not the tests')
so ``bench_payments`` can be run again with history (docs/benchmarks.md, "Flat with size"):

- ``--orders N``: bank-paid orders with every row reconcile reads in each service
  (paysys/bench/generate.py, as bench_reconcile makes them), of merchants and payers of their
  own (ids from ``HISTORY_IDS``), so reconcile stays consistent;
- ``--messages M``: CONSUMED outbox rows (``bank.payment_succeeded`` and ``order.paid`` to each of
  their consumers, in the producer's database) with the consumer's inbox row, consumed an hour
  ago or, with ``--age-days D``, D days ago: older than ``RETENTION_DAYS`` they are the backlog
  that ``purge_history`` deletes while ``bench_payments`` runs (docs/benchmarks.md, "Retention");
  stored into new databases before anything newer, as history is written (retention finds old
  rows by their keys).

It tops up: N and M are totals, and only what is missing is inserted (history rows are known by
their ``BR`` order numbers and ``history:`` business keys). Inserts are multi-row, 10,000 a batch.
It fills only a benchmark's databases: one where ``bench_payments`` has run (its ``bench-``
merchant is the marker) and DEBUG is on; anything else needs ``--yes-fill-this-database``.

``--metrics K`` then times K ``GET /metrics`` at ``PUBLIC_BASE_URL`` (Bearer ``METRICS_TOKEN``)
and prints p50 and max in ms.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import timedelta

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import Max
from django.utils import timezone

from paysys.bench.generate import BATCH, load_rows, paid_orders_generate
from paysys.contracts import BankPaymentSucceeded, OrderPaid
from paysys.core.models import Merchant
from paysys.messaging.models import InboxEntry, Message
from paysys.messaging.registry import consumers_of
from paysys.reconcile.management.commands.reconcile import progress_bar

HISTORY_IDS = 1_000_000_000  # history merchants and payers are 1e9 + 1 ...: nobody else's accounts
MESSAGE_COLUMNS = [
    "message_id",
    "topic",
    "consumer",
    "queue",
    "payload",
    "status",
    "send_count",
    "business_key",
    "check_back",
    "check_count",
    "last_error",
    "created_at",
    "confirmed_at",
    "consumed_at",
]


class Command(BaseCommand):
    help = "Fill a benchmark stack's databases with paid orders and consumed messages; time GET /metrics."

    def add_arguments(self, parser):
        parser.add_argument(
            "--orders", type=int, default=0, help="paid orders the history should hold (a total)"
        )
        parser.add_argument(
            "--messages", type=int, default=0, help="consumed messages it should hold (a total)"
        )
        parser.add_argument(
            "--age-days",
            type=float,
            default=0,
            help="the messages were consumed this many days ago (default: an hour ago); "
            "older than RETENTION_DAYS, they are a backlog for purge_history",
        )
        parser.add_argument("--merchants", type=int, default=1000)
        parser.add_argument("--payers", type=int, default=100_000)
        parser.add_argument("--metrics", type=int, default=0, help="time this many GET /metrics")
        parser.add_argument(
            "--yes-fill-this-database",
            action="store_true",
            help="fill even without the bench marker or with DEBUG off",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **opts):
        result = {}
        if opts["orders"] or opts["messages"]:
            self._refuse_unless_bench(opts["yes_fill_this_database"])
            started = time.monotonic()
            result["orders_added"] = self._fill_orders(opts)
            result["messages_added"] = self._fill_messages(opts["messages"], opts["age_days"])
            result["fill_seconds"] = round(time.monotonic() - started, 1)
        if opts["metrics"]:
            result["metrics_ms"] = self._time_metrics(opts["metrics"])
        if opts["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(", ".join(f"{k} {v}" for k, v in result.items()))

    def _refuse_unless_bench(self, forced: bool) -> None:
        if forced:
            return
        if not Merchant.objects.filter(name__startswith="bench-").exists():
            raise CommandError(
                f"{connections['default'].settings_dict['NAME']} has no bench marker (a merchant "
                "bench_payments made): not filling it. --yes-fill-this-database if it is a benchmark's"
            )
        if not settings.DEBUG:
            raise CommandError(
                "DEBUG is off: this may be a deployment. --yes-fill-this-database if it is a benchmark's"
            )

    def _fill_orders(self, opts) -> int:
        from accounting.models import Voucher
        from orders.models import Order
        from paysys.tcc.models import GlobalTransaction

        missing = opts["orders"] - Order.objects.filter(out_trade_no__startswith="BR").count()
        if missing <= 0:
            return 0
        # order, TCC transaction and voucher ids are the generator's: start after every table's last
        first = 1 + max(
            model.objects.aggregate(last=Max("id"))["last"] or 0
            for model in (Order, GlobalTransaction, Voucher)
        )
        paid_orders_generate(
            range(first, first + missing),
            merchants=range(HISTORY_IDS + 1, HISTORY_IDS + 1 + opts["merchants"]),
            payers=range(HISTORY_IDS + 1, HISTORY_IDS + 1 + opts["payers"]),
            progress=lambda done, total: progress_bar(self.stderr, "paid orders", done, total),
        )
        return missing

    def _fill_messages(self, total: int, age_days: float) -> int:
        routes = [
            (contract, consumer)
            for contract in (BankPaymentSucceeded, OrderPaid)
            for consumer in consumers_of(contract.TOPIC)
        ]
        history = {contract.PRODUCER for contract, _ in routes}
        missing = total - sum(
            Message.objects.using(alias).filter(business_key__startswith="history:").count()
            for alias in history
        )
        if missing <= 0:
            return 0
        tag = uuid.uuid4().hex[:8]  # a second top-up's business keys differ from the first's
        when = timezone.now() - (timedelta(days=age_days) if age_days else timedelta(hours=1))
        newer = [
            alias
            for alias in history
            if Message.objects.using(alias).filter(created_at__gt=when).exists()
        ]
        if newer:  # retention finds old rows by their keys: rows are numbered in write order
            raise CommandError(
                f"the {', '.join(sorted(newer))} database(s) already hold messages newer than "
                f"{age_days:g} days: old messages stored after them would be numbered after them, "
                "and retention (which finds old rows by their keys, numbered in the order they "
                "are written) would never reach them. Fill --age-days history into new databases "
                "first, before any bench_payments run (bench_history --yes-fill-this-database "
                "right after migrate)"
            )
        at = {
            alias: connections[alias].ops.adapt_datetimefield_value(when) for alias in connections
        }
        for first in range(0, missing, BATCH):
            rows = {}  # (model, alias) -> tuples
            for j in range(first, min(first + BATCH, missing)):
                contract, consumer = routes[j % len(routes)]
                message_id, sent = uuid.uuid4(), at[contract.PRODUCER]
                rows.setdefault((Message, contract.PRODUCER), []).append(
                    (
                        _uuid(message_id, contract.PRODUCER),
                        contract.TOPIC,
                        consumer.name,
                        consumer.queue,
                        json.dumps(
                            {"v": 1, "out_trade_no": f"HS{tag}{j:012d}", "amount": 100 + j % 99_900}
                        ),
                        Message.Status.CONSUMED,
                        1,
                        f"history:{tag}:{j}",
                        "",
                        0,
                        "",
                        sent,
                        sent,
                        sent,
                    )
                )
                rows.setdefault((InboxEntry, consumer.alias), []).append(
                    (
                        consumer.name,
                        _uuid(message_id, consumer.alias),
                        contract.TOPIC,
                        at[consumer.alias],
                    )
                )
            for (model, alias), values in rows.items():
                columns = (
                    MESSAGE_COLUMNS
                    if model is Message
                    else ["consumer", "message_id", "topic", "received_at"]
                )
                load_rows(model, columns, values, using=alias)
            progress_bar(self.stderr, "messages", min(first + BATCH, missing), missing)
        return missing

    def _time_metrics(self, times: int) -> dict:
        if not settings.METRICS_TOKEN:
            raise CommandError("METRICS_TOKEN is not set: /metrics is off")
        url = settings.PUBLIC_BASE_URL.rstrip("/") + "/metrics"
        headers, took = {"Authorization": f"Bearer {settings.METRICS_TOKEN}"}, []
        with requests.Session() as session:
            for _ in range(times):
                started = time.perf_counter()
                session.get(url, headers=headers, timeout=30).raise_for_status()
                took.append((time.perf_counter() - started) * 1000)
        return {"n": times, "p50": round(statistics.median(took), 1), "max": round(max(took), 1)}


def _uuid(value: uuid.UUID, alias: str):
    return Message._meta.get_field("message_id").get_db_prep_value(value, connections[alias])
