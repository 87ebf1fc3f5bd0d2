"""The delivery engine: claim due records, send them concurrently, record every attempt.

Concurrency model. One pass runs in the delivery worker (queue ``notify_delivery``): its main
thread does all database work, synchronously; HTTP runs on an asyncio event loop in one
background thread of the same process. A request in flight is a coroutine and a socket, not a
thread, so a hanging merchant costs almost nothing while it waits out its 15 s, and thousands
can wait at once. Limits: ``NOTIFY_MAX_IN_FLIGHT`` requests per process, and
``NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT`` per host (name and port: the URLs ``?i=1`` … ``?i=N`` of
one slow server share one limit); the endpoints of a host at its limit are left out of the next
claim, so its backlog waits for it alone while every other merchant is served.

A pass loops: record the attempts that finished (a few statements per batch), then claim as many
due records as there is room for (a plain read of the due index, then ``SELECT … FOR UPDATE SKIP
LOCKED`` of exactly those: several machines never claim the same record) and push each one's due
time a lease ahead (a worker killed mid-delivery loses nothing: when the lease expires another
pass sends it, with the same webhook-id), sign, and hand them to the loop. Between scans it
sleeps until the next claimable record is due (at most ``NOTIFY_POLL_INTERVAL``) or an attempt
finishes, then ``NOTIFY_COLLECT_SECONDS`` more: under load each turn records and claims several
records for one set of statements instead of one each (the statements, not the requests, are
what a delivery costs), for a few milliseconds of latency; it ends when nothing is in flight and nothing comes due within
``NOTIFY_LINGER_SECONDS``, or after ``NOTIFY_PASS_SECONDS``. The requests in flight belong to the
process (``_Flight``), not to the pass: the worker's pass ends without waiting out a hanging
merchant, and the next pass in the process records what it left running.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from notifications.models import Attempt, Endpoint, Notification
from notifications.services import ALIAS, retry_schedules
from notifications.signing import signed_headers
from paysys.core import http
from paysys.core.kicks import PerProcess
from paysys.core.steps import log_steps

logger = logging.getLogger(__name__)

Status = Notification.Status


@dataclass
class PassResult:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that failed (the record may still be PENDING)
    exhausted: int = 0  # records that became FAILED
    seconds: float = 0.0
    busy: bool = (
        False  # it ended at its deadline with work going on: the next pass should start now
    )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _InFlight:
    record: Notification
    number: int
    trigger: str
    headers: dict
    host: str  # host_key(record.url): what the in-flight limit counts
    response: http.Response | None = None


def host_key(url: str) -> str:
    """``host:port`` of a URL: the unit of the per-endpoint in-flight limit. Not the URL, which
    a merchant varies at will (a query string, a path) to reach one server as many endpoints."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # never accepted; counted as itself
        return url
    return f"{(parts.hostname or '').rstrip('.')}:{port}"


# --- the event loop thread -----------------------------------------------------------------


class _Flight:
    """The requests in flight in this process: the event loop thread that runs them, how many
    there are (overall and per host, the limits' counters) and the queue of finished ones.
    It outlives a pass: a pass that ends at its deadline leaves its slow requests running, and
    the next pass in this process records them, so no pass ever stops claiming to wait out a
    hanging merchant's 15 s."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: queue.Queue[_InFlight] = queue.Queue()
        self.count = 0
        self.by_host: dict[str, int] = {}
        self.host_endpoints: dict[str, set[int]] = {}  # the endpoints seen of each host
        self.tasks: set[asyncio.Task] = set()  # the loop keeps only weak references
        self.loop = _new_event_loop()
        threading.Thread(
            target=self.loop.run_forever, name="paysys-notify-http", daemon=True
        ).start()

    def full_endpoints(self) -> list[int]:
        """Every endpoint seen of the hosts at their limit: the next claim leaves them out."""
        limit = settings.NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT
        with self.lock:
            return [
                endpoint_id
                for host, n in self.by_host.items()
                if n >= limit
                for endpoint_id in self.host_endpoints.get(host, ())
            ]

    def room(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            return settings.NOTIFY_MAX_IN_FLIGHT - self.count, dict(self.by_host)

    def learn(self, endpoint_id: int, host: str) -> None:
        with self.lock:
            if (
                len(self.host_endpoints) > 10_000
            ):  # bounded: forget the hosts with nothing in flight
                self.host_endpoints = {
                    h: ids for h, ids in self.host_endpoints.items() if h in self.by_host
                }
            self.host_endpoints.setdefault(host, set()).add(endpoint_id)

    def add(self, item: _InFlight) -> None:
        with self.lock:
            self.count += 1
            self.by_host[item.host] = self.by_host.get(item.host, 0) + 1

    def remove(self, items: list[_InFlight]) -> None:
        with self.lock:
            for item in items:
                self.count -= 1
                self.by_host[item.host] -= 1
                if not self.by_host[item.host]:
                    del self.by_host[item.host]

    def start(self, items: list[_InFlight]) -> None:
        # one hand-off to the loop thread per batch, not one wake-up per request
        self.loop.call_soon_threadsafe(self._start, items)

    def _start(self, items: list[_InFlight]) -> None:  # runs on the loop thread
        for item in items:
            task = self.loop.create_task(
                http.post(
                    item.record.url,
                    item.headers,
                    item.record.body.encode(),
                    connect_timeout=settings.NOTIFY_CONNECT_TIMEOUT,
                    total_timeout=settings.NOTIFY_TOTAL_TIMEOUT,
                )
            )
            self.tasks.add(task)
            task.add_done_callback(lambda t, item=item: self._finished(item, t))

    def _finished(self, item: _InFlight, task) -> None:  # runs on the loop thread
        self.tasks.discard(task)
        try:
            item.response = task.result()
        except BaseException as exc:  # noqa: BLE001 - a bug in the client is still an attempt, recorded
            item.response = http.internal_error(exc)
        self.done.put(item)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:  # libuv's loop: about a fifth less CPU per request than asyncio's own (bench_notify)
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


_flight = PerProcess(_Flight).get  # this process's flight; a forked child starts its own


# --- a pass --------------------------------------------------------------------------------


def deliver_due(
    *, now: datetime | None = None, budget_seconds: float | None = None, drain: bool = True
) -> PassResult:
    """One delivery pass. ``now`` (tests) fixes the clock used to find due records and to
    schedule retries; the request's ``webhook-timestamp`` is always the real time.

    With ``drain`` the pass returns only when every request it started is recorded (commands,
    tests); without (the worker's task), a pass that reaches its deadline returns at once and
    leaves slow requests to the next pass of this process."""
    budget = settings.NOTIFY_PASS_SECONDS if budget_seconds is None else budget_seconds
    return _Pass(now=now).run(budget, drain=drain)


class _Pass:
    def __init__(self, *, now: datetime | None) -> None:
        self.fixed_now = now
        self.flight = _flight()
        self._disabled_cache: dict[int, str] = {}
        self._disabled_at: float | None = None
        self._secrets_cache: dict[int, list[str]] = {}
        self._secrets_at = 0.0
        self.result = PassResult()

    def now(self) -> datetime:
        return self.fixed_now or timezone.now()

    @property
    def in_flight(self) -> int:
        return self.flight.count

    def run(self, budget: float, *, drain: bool = True) -> PassResult:
        started = time.monotonic()
        deadline = started + budget
        try:
            while time.monotonic() < deadline:
                self._record(self._drain())
                if self._claim_all() or self.in_flight >= settings.NOTIFY_MAX_IN_FLIGHT:
                    # the claims took all the room or all that is due: what comes next is made
                    # possible by attempts finishing, so collect them, then record them together
                    self._wait(settings.NOTIFY_POLL_INTERVAL)
                    continue
                wait = self._until_next_due()
                if self.in_flight == 0 and (wait is None or wait > settings.NOTIFY_LINGER_SECONDS):
                    break  # nothing in flight, nothing due in a moment: the next beat takes over
                self._wait(
                    min(
                        settings.NOTIFY_POLL_INTERVAL,
                        wait if wait is not None else settings.NOTIFY_POLL_INTERVAL,
                    )
                )
        finally:
            self._record(self._drain())
            # the requests still running finish within the total timeout: wait for them, or
            # leave them to the next pass here (a killed process loses them to the lease only)
            while drain and self.in_flight:
                self._wait(settings.NOTIFY_TOTAL_TIMEOUT + 5)
                self._record(self._drain())
        self.result.seconds = round(time.monotonic() - started, 3)
        self.result.busy = time.monotonic() >= deadline
        return self.result

    def _until_next_due(self) -> float | None:
        """Seconds until the next record this pass could claim is due (0 if one is due now),
        None if none is; a pass with a fixed clock (tests) never waits for the future."""
        if self.fixed_now is not None:
            return None
        full = self.flight.full_endpoints()
        first = (
            Notification.objects.using(ALIAS)
            .filter(next_attempt_at__isnull=False)
            .exclude(endpoint_id__in=full)
            .order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        if first is None:
            return None
        # a record due now that this pass could not claim is locked by another pass for a moment
        return max((first - self.now()).total_seconds(), 0.01)

    def _wait(self, timeout: float) -> None:
        """Sleep until an attempt finishes or ``timeout`` passes; finished ones stay queued."""
        try:
            item = self.flight.done.get(timeout=timeout)
        except queue.Empty:
            return
        self.flight.done.put(item)
        time.sleep(
            settings.NOTIFY_COLLECT_SECONDS
        )  # let more finish and come due: one turn for all

    def _drain(self) -> list[_InFlight]:
        items = []
        while True:
            try:
                items.append(self.flight.done.get_nowait())
            except queue.Empty:
                return items

    # --- claim and send --------------------------------------------------------------------

    def _claim_all(self) -> int:
        """Claim until the room is used or nothing more is claimable. A claim that stopped at
        endpoints reaching their limit (a backlog of one merchant fills the first rows) is
        followed at once by another that leaves those endpoints out."""
        progress = 0
        while True:
            taken, saturated = self._claim_and_send()
            progress += taken
            if not saturated or not taken or self.in_flight >= settings.NOTIFY_MAX_IN_FLIGHT:
                return progress

    def _claim_and_send(self) -> tuple[int, bool]:
        room, by_host = self.flight.room()
        if room <= 0:
            return 0, False
        per_host = settings.NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT
        full = self.flight.full_endpoints()
        now = self.now()
        # which records: a plain read of the due index alone (no row locks, so the backlog of a
        # merchant at its limit, which the scan passes over, is neither read nor locked) ...
        due = list(
            Notification.objects.using(ALIAS)
            .filter(next_attempt_at__lte=now)
            .exclude(endpoint_id__in=full)
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[:room]
        )
        if not due:
            return 0, False
        with transaction.atomic(using=ALIAS):
            # ... then lock exactly those still due; another pass's claims are skipped, or no
            # longer due (their lease moved them)
            candidates = list(
                Notification.objects.using(ALIAS)
                .select_for_update(skip_locked=True)
                .filter(id__in=due, next_attempt_at__lte=now)
                .order_by("next_attempt_at")
                .only(
                    "id",
                    "webhook_id",
                    "merchant_id",
                    "out_trade_no",
                    "endpoint_id",
                    "url",
                    "attempt_count",
                    "step",
                )
            )
            if not candidates:
                return 0, False
            disabled = {
                c.endpoint_id: self._disabled()[c.endpoint_id]
                for c in candidates
                if c.endpoint_id in self._disabled()
            }
            taken, counts = [], by_host
            for record in candidates:
                host = host_key(record.url)
                self.flight.learn(record.endpoint_id, host)
                if record.endpoint_id in disabled:
                    continue
                if counts.get(host, 0) >= per_host:
                    continue  # left due and unchanged; claimed when its host has room
                counts[host] = counts.get(host, 0) + 1
                taken.append(record)
            if disabled:
                # no request to a disabled endpoint: the record waits for a human, with the reason
                for endpoint_id, reason in disabled.items():
                    ids = [c.id for c in candidates if c.endpoint_id == endpoint_id]
                    self.result.exhausted += (
                        Notification.objects.using(ALIAS)
                        .filter(id__in=ids)
                        .transition(
                            Status.FAILED,
                            next_attempt_at=None,
                            last_error=f"endpoint disabled: {reason}",
                        )
                    )
            if taken:
                Notification.objects.using(ALIAS).filter(id__in=[r.id for r in taken]).update(
                    next_attempt_at=now + timedelta(seconds=settings.NOTIFY_CLAIM_LEASE)
                )
        if taken:
            # bodies are read only for the records taken: candidates left for a busy endpoint
            # cost no more than their index entries
            bodies = dict(
                Notification.objects.using(ALIAS)
                .filter(id__in=[r.id for r in taken])
                .values_list("id", "body")
            )
            for record in taken:
                record.body = bodies[record.id]
            self._send(taken)
        self.result.claimed += len(taken)
        progress = len(taken) + sum(1 for c in candidates if c.endpoint_id in disabled)
        return progress, progress < len(candidates)  # some were left for endpoints at their limit

    def _disabled(self) -> dict[int, str]:
        """Disabled endpoints and why, read at most once a second (a disable applies within it)."""
        if self._disabled_at is None or time.monotonic() - self._disabled_at > 1.0:
            self._disabled_cache = dict(
                Endpoint.objects.using(ALIAS)
                .filter(disabled_at__isnull=False)
                .values_list("id", "disabled_reason")
            )
            self._disabled_at = time.monotonic()
        return self._disabled_cache

    def _secrets(self, merchant_ids: set[int]) -> dict[int, list[str]]:
        """Signing secrets per merchant, read at most once a second (a rotation applies within it)."""
        if time.monotonic() - self._secrets_at > 1.0:
            self._secrets_cache, self._secrets_at = {}, time.monotonic()
        missing = merchant_ids - self._secrets_cache.keys()
        if missing:
            self._secrets_cache.update(_merchant_secrets(missing))
        return self._secrets_cache

    def _send(self, records: list[Notification]) -> None:
        secrets = self._secrets({r.merchant_id for r in records})
        timestamp = int(time.time())
        started: list[_InFlight] = []
        for record in records:
            keys = secrets.get(record.merchant_id)
            headers = (
                signed_headers(keys, record.webhook_id, timestamp, record.body) if keys else {}
            )
            trigger = (
                Attempt.Trigger.RESEND
                if record.step == 0 and record.attempt_count > 0
                else Attempt.Trigger.SCHEDULE
            )
            item = _InFlight(
                record=record,
                number=record.attempt_count + 1,
                trigger=trigger,
                headers=headers,
                host=host_key(record.url),
            )
            self.flight.add(item)
            if not keys:  # nothing to sign with: an attempt that never left, with the reason
                item.response = http.Response(
                    started_at=timezone.now(),
                    refused=True,
                    error_class="no_secret",
                    error=f"merchant #{record.merchant_id} has no webhook secret (not found)",
                )
                self.flight.done.put(item)
                continue
            started.append(item)
        self.flight.start(started)

    # --- record outcomes -------------------------------------------------------------------

    def _record(self, items: list[_InFlight]) -> None:
        if not items:
            return
        try:
            record_attempts(items, now=self.now(), result=self.result)
        finally:
            # unrecorded (database down): their leases expire and they are sent again
            self.flight.remove(items)


def _merchant_secrets(merchant_ids: set[int]) -> dict[int, list[str]]:
    from paysys.core.models import Merchant  # core identity: every app may read it
    from paysys.core.services import merchant_webhook_secrets

    return {m.pk: merchant_webhook_secrets(m) for m in Merchant.objects.filter(pk__in=merchant_ids)}


def classify(response: http.Response) -> tuple[str, str, str]:
    """(outcome, error_class, error) of one attempt."""
    if response.refused:
        return Attempt.Outcome.REFUSED, response.error_class, response.error
    code = response.status_code
    if code is None:
        return Attempt.Outcome.FAILED, response.error_class or "connect", response.error
    if 200 <= code < 300:
        return Attempt.Outcome.SUCCEEDED, "", ""
    if 300 <= code < 400:
        where = f" to {response.location}" if response.location else ""
        return (
            Attempt.Outcome.FAILED,
            "redirect",
            f"HTTP {code}: redirect{where} not followed (answer 2xx at the URL itself)",
        )
    if code == 410:
        return Attempt.Outcome.FAILED, "gone", "HTTP 410 Gone: endpoint disabled until re-enabled"
    return Attempt.Outcome.FAILED, "http_status", f"HTTP {code}"


def next_wait(schedule: list[int], step: int, retry_after: float | None) -> float | None:
    """Seconds until the next attempt after a failed attempt at ``step``, or None if that was
    the last. The schedule's wait gets ±NOTIFY_RETRY_JITTER; a Retry-After longer than that is
    honoured up to twice the step's wait (a merchant cannot park its notifications for days)."""
    if step >= len(schedule):
        return None
    base = schedule[step]
    jitter = settings.NOTIFY_RETRY_JITTER
    wait = base * random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        wait = max(wait, min(retry_after, base * 2))
    return wait


def _insert_attempts(attempts: list[Attempt]) -> None:
    """``bulk_create`` without the query compiler: on the hot path (1,000+ rows a second) Django
    building the INSERT cost more CPU than the database took to run it. One multi-row INSERT."""
    if not attempts:
        return
    connection = connections[ALIAS]
    fields = [f for f in Attempt._meta.concrete_fields if not f.primary_key]
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        connection.ops.quote_name(Attempt._meta.db_table),
        ", ".join(connection.ops.quote_name(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    rows = [
        [f.get_db_prep_save(f.value_from_object(a), connection) for f in fields] for a in attempts
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def record_attempts(items: list[_InFlight], *, now: datetime, result: PassResult) -> None:
    """Write the attempts of a batch and move each record on: a handful of statements in one
    transaction, whatever the batch size (successes in one UPDATE)."""
    attempts, succeeded, failures, gone = [], {}, [], {}
    endpoint_ok: dict[int, datetime] = {}
    endpoint_failed: dict[int, int] = {}
    for item in items:
        record, response = item.record, item.response
        outcome, error_class, error = classify(response)
        attempts.append(
            Attempt(
                notification_id=record.id,
                merchant_id=record.merchant_id,
                number=item.number,
                trigger=item.trigger,
                started_at=response.started_at,
                url=record.url,
                address=response.address,
                request_headers=item.headers,
                request_body=record.body,
                status_code=response.status_code,
                response_excerpt=response.excerpt,
                duration_ms=response.duration_ms,
                outcome=outcome,
                error_class=error_class,
                error=error[:2000],
            )
        )
        if outcome == Attempt.Outcome.SUCCEEDED:
            succeeded.setdefault(response.status_code, []).append(record.id)
            endpoint_ok[record.endpoint_id] = response.started_at
            result.succeeded += 1
            continue
        result.failed += 1
        endpoint_failed[record.endpoint_id] = endpoint_failed.get(record.endpoint_id, 0) + 1
        if error_class == "gone":
            gone[record.endpoint_id] = record.url
        failures.append((record, response, error or error_class))
    schedules = retry_schedules({record.merchant_id for record, _, _ in failures})
    with transaction.atomic(using=ALIAS):
        # a record deleted while its request was in flight (retention, a test's cleanup) has no
        # row for its attempt to belong to; it must not sink the batch (SQLite checks foreign
        # keys only at commit, so ask first rather than catch)
        alive = set(
            Notification.objects.using(ALIAS)
            .filter(id__in=[a.notification_id for a in attempts])
            .values_list("id", flat=True)
        )
        if len(alive) < len(attempts):
            logger.warning(
                "%d attempt(s) of deleted notifications dropped",
                sum(a.notification_id not in alive for a in attempts),
            )
        _insert_attempts([a for a in attempts if a.notification_id in alive])
        for code, ids in succeeded.items():
            Notification.objects.using(ALIAS).filter(id__in=ids).transition(
                Status.SUCCEEDED,
                attempt_count=F("attempt_count") + 1,
                next_attempt_at=None,
                succeeded_at=now,
                last_status_code=code,
                last_error="",
                updated_at=now,
            )
        for endpoint_id, url in gone.items():
            Endpoint.objects.using(ALIAS).filter(id=endpoint_id, disabled_at__isnull=True).update(
                disabled_at=now, disabled_reason=f"410 Gone from {url}"[:255]
            )
        # failures alike (same answer, same step) move in one UPDATE, each to its own jittered
        # due time: a hanging merchant's timeouts arrive together and must not cost one
        # statement each while other merchants wait
        groups: dict[tuple, dict[int, datetime | None]] = {}
        for record, response, error in failures:
            wait = (
                None
                if record.endpoint_id in gone
                else next_wait(schedules[record.merchant_id], record.step, response.retry_after)
            )
            key = (response.status_code, error[:2000], None if wait is None else record.step + 1)
            groups.setdefault(key, {})[record.id] = (
                None if wait is None else now + timedelta(seconds=wait)
            )
        for (status_code, error, step), due in groups.items():
            changes = {
                "attempt_count": F("attempt_count") + 1,
                "last_status_code": status_code,
                "last_error": error,
                "updated_at": now,
            }
            # only a record still PENDING moves: a concurrent success (or a resend) wins
            records = Notification.objects.using(ALIAS).filter(
                id__in=list(due), status=Status.PENDING
            )
            if step is None:
                records.transition(Status.FAILED, next_attempt_at=None, **changes)
                result.exhausted += len(due)
            else:
                records.update(
                    step=step,
                    next_attempt_at=Case(
                        *(When(id=record_id, then=Value(at)) for record_id, at in due.items()),
                        output_field=Notification._meta.get_field("next_attempt_at"),
                    ),
                    **changes,
                )
        if endpoint_ok:
            # health to the second is enough: a busy endpoint's row is written about once a
            # second, not in every batch of every worker (they would queue on its row lock)
            Endpoint.objects.using(ALIAS).filter(id__in=list(endpoint_ok)).filter(
                Q(consecutive_failures__gt=0)
                | Q(last_success_at__isnull=True)
                | Q(last_success_at__lt=now - timedelta(seconds=1))
            ).update(consecutive_failures=0, last_attempt_at=now, last_success_at=now)
        for endpoint_id, n in endpoint_failed.items():
            if endpoint_id in endpoint_ok:
                continue  # it answers: one 2xx in the batch says it is up
            Endpoint.objects.using(ALIAS).filter(id=endpoint_id).update(
                consecutive_failures=F("consecutive_failures") + n, last_attempt_at=now
            )
    if gone:
        logger.warning("endpoint(s) disabled after 410 Gone: %s", ", ".join(gone.values()))
    acknowledged = {record_id for ids in succeeded.values() for record_id in ids}
    log_steps(
        logger,
        "order %s: merchant %s notified (%s, HTTP %s, attempt %s)",
        [
            (
                item.record.out_trade_no,
                item.record.merchant_id,
                item.record.webhook_id,
                item.response.status_code,
                item.number,
            )
            for item in items
            if item.record.id in acknowledged
        ],
        using=ALIAS,
    )
