"""Throughput of the reliable message service, and the cost of the recovery scan.

    manage.py bench_messaging [--messages 20000] [--producers 8] [--worker-processes 2]
                              [--scan-rows 1000000] [--scan-passes 200]

Starts one Celery worker (``--worker-processes`` pool processes) on the configured broker and
measures:

* backlog drain: ``--messages`` committed messages become due at once (as after an outage);
  messages/s through relay -> consume -> acknowledgement, the message service alone;
* end to end: ``--producers`` processes publish ``--messages`` messages, each in its own
  producer transaction, while the worker consumes; messages/s from the first publish to the
  last acknowledgement, and publish-to-ack latency;
* recovery scan: fills the outbox with ``--scan-rows`` CONSUMED rows and times
  ``--scan-passes`` recovery passes over it.

Everything it writes is deleted at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections, transaction
from django.utils import timezone

from paysys.bench.contracts import BenchPing
from paysys.bench.workers import start_worker
from paysys.messaging import kicks, outbox, recovery, relay
from paysys.messaging.models import InboxEntry, Message

ALIAS = "default"


class Command(BaseCommand):
    help = "Measure messages/s through outbox -> consumer -> ack, and the recovery scan time."

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=20000)
        parser.add_argument("--producers", type=int, default=8, help="producer processes")
        parser.add_argument("--worker-processes", type=int, default=2)
        parser.add_argument(
            "--scan-rows", type=int, default=1_000_000, help="0 skips the scan benchmark"
        )
        parser.add_argument("--scan-passes", type=int, default=200)

    def handle(self, *args, **opts):
        if settings.CELERY_BROKER_URL.startswith("filesystem"):
            self.stdout.write(
                self.style.WARNING(
                    "embedded broker: figures are not representative; use MariaDB + Redis"
                )
            )
        self._cleanup()
        try:
            if opts["messages"]:
                self._throughput(opts["messages"], opts["producers"], opts["worker_processes"])
            if opts["scan_rows"]:
                self._scan(opts["scan_rows"], opts["scan_passes"])
        finally:
            self.stdout.write("cleaning up bench rows ...")
            self._cleanup()

    # --- throughput ----------------------------------------------------------------------

    def _throughput(self, total: int, producers: int, processes: int) -> None:
        worker = start_worker(
            "core", name=f"bench-{os.getpid()}", concurrency=processes, pool="prefork"
        )
        try:
            time.sleep(3)  # let the pool start before the clock does
            self._drain(total)
            self._cleanup()
            self.stdout.write(
                f"publishing {total} messages from {producers} producer processes ..."
            )
            connections.close_all()  # children must open their own connections
            fork = multiprocessing.get_context("fork")
            started = time.monotonic()
            procs = [
                fork.Process(target=self._publish, args=(total // producers,))
                for _ in range(producers)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            published = time.monotonic() - started
            sent = (total // producers) * producers
            self.stdout.write(f"  published {sent} in {published:.2f}s ({sent / published:.0f}/s)")
            self._wait_consumed(sent, started)
            elapsed = time.monotonic() - started
            latencies = self._latencies()
            self.stdout.write(
                self.style.SUCCESS(
                    f"throughput: {sent / elapsed:.0f} messages/s end to end ({sent} messages, {elapsed:.2f}s, "
                    f"{processes} worker processes)"
                )
            )
            self.stdout.write(
                f"latency publish->ack: p50 {latencies[0]:.0f} ms, p99 {latencies[1]:.0f} ms"
            )
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)

    def _drain(self, total: int) -> None:
        """A backlog of ``total`` committed messages becomes due at once (as after an outage):
        the relay -> consume -> acknowledge pipeline alone, without producers competing for CPU."""
        self.stdout.write(f"writing a backlog of {total} messages (not yet due) ...")
        later = timezone.now() + timedelta(hours=1)
        for start in range(0, total, 500):
            with transaction.atomic(using=ALIAS):
                for n in range(start, min(start + 500, total)):
                    outbox.publish(BenchPing(n=n), using=ALIAS)
                Message.objects.using(ALIAS).filter(topic=BenchPing.TOPIC, send_count=0).update(
                    next_send_at=later
                )
        started = time.monotonic()
        Message.objects.using(ALIAS).filter(topic=BenchPing.TOPIC).update(
            next_send_at=timezone.now()
        )
        kicks.kick_relay(ALIAS)
        self._wait_consumed(total, started)
        elapsed = time.monotonic() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"backlog drain (relay -> consume -> ack): {total / elapsed:.0f} messages/s ({total} in {elapsed:.2f}s)"
            )
        )

    def _wait_consumed(self, total: int, started: float) -> None:
        consumed = 0
        while consumed < total:
            time.sleep(0.25)
            consumed = (
                Message.objects.using(ALIAS)
                .filter(topic=BenchPing.TOPIC, status=Message.Status.CONSUMED)
                .count()
            )
            elapsed = time.monotonic() - started
            self.stdout.write(f"  consumed {consumed}/{total} after {elapsed:.1f}s", ending="\r")
            if elapsed > 600:
                raise CommandError(
                    "not all messages were consumed within 10 minutes: are the broker and database up?"
                )
        self.stdout.write("")

    def _publish(self, count: int) -> None:
        try:
            for n in range(count):
                with transaction.atomic(using=ALIAS):
                    outbox.publish(BenchPing(n=n), using=ALIAS)
            kicks.flush_relay_requests()  # a forked child exits without running atexit
        finally:
            connections.close_all()

    def _latencies(self) -> tuple[float, float]:
        rows = (
            Message.objects.using(ALIAS)
            .filter(topic=BenchPing.TOPIC)
            .values_list("created_at", "consumed_at")
        )
        ms = sorted((c - p).total_seconds() * 1000 for p, c in rows if c)
        return statistics.median(ms), ms[int(len(ms) * 0.99) - 1]

    # --- recovery scan -------------------------------------------------------------------

    def _scan(self, rows: int, passes: int) -> None:
        self.stdout.write(f"filling the outbox with {rows} CONSUMED messages ...")
        started = time.monotonic()
        self._fill_consumed(rows)
        self.stdout.write(f"  filled in {time.monotonic() - started:.1f}s")
        timings = []
        for _ in range(passes):
            t0 = time.perf_counter()
            relay.relay_due(ALIAS)
            recovery.check_back_due(ALIAS)
            timings.append((time.perf_counter() - t0) * 1000)
        timings.sort()
        self.stdout.write(
            self.style.SUCCESS(
                f"recovery scan over {rows} consumed messages: median {statistics.median(timings):.2f} ms, "
                f"p99 {timings[int(len(timings) * 0.99) - 1]:.2f} ms per pass ({passes} passes)"
            )
        )

    def _fill_consumed(self, rows: int) -> None:
        connection = connections[ALIAS]
        now = timezone.now()
        if connection.vendor == "mysql":
            chunk = 100_000
            with connection.cursor() as cursor:
                for start in range(0, rows, chunk):
                    n = min(chunk, rows - start)
                    cursor.execute(
                        f"INSERT INTO messaging_message (message_id, topic, consumer, queue, payload, status, send_count,"
                        f" next_send_at, business_key, check_back, check_count, last_error, created_at, confirmed_at,"
                        f" consumed_at) SELECT REPLACE(UUID(), '-', ''), %s, 'core.bench_noop', 'core', '{{}}', 'CONSUMED', 1,"
                        f" NULL, '', '', 0, '', %s, %s, %s FROM seq_1_to_{n}",
                        [BenchPing.TOPIC, now, now, now],
                    )
                    self.stdout.write(f"  {start + n}/{rows}", ending="\r")
            self.stdout.write("")
            return
        batch = []
        for _i in range(rows):
            batch.append(
                Message(
                    topic=BenchPing.TOPIC,
                    consumer="core.bench_noop",
                    queue="core",
                    payload={},
                    status=Message.Status.CONSUMED,
                    send_count=1,
                    consumed_at=now,
                )
            )
            if len(batch) == 10_000:
                Message.objects.using(ALIAS).bulk_create(batch)
                batch.clear()
        Message.objects.using(ALIAS).bulk_create(batch)

    def _cleanup(self) -> None:
        while True:
            ids = list(
                Message.objects.using(ALIAS)
                .filter(topic=BenchPing.TOPIC)
                .values_list("id", flat=True)[:50_000]
            )
            if not ids:
                break
            Message.objects.using(ALIAS).filter(id__in=ids).delete()
        InboxEntry.objects.using(ALIAS).filter(topic=BenchPing.TOPIC).delete()
