"""The delivery pass: record what finished, claim what is due and has room, sign it and hand it
to this process's event loop (``flight``), wait; the loop of ``deliver_due``."""

from __future__ import annotations

import queue
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from notifications.delivery import flight
from notifications.delivery.attempts import record_attempts
from notifications.delivery.flight import InFlight, host_key
from notifications.models import Attempt, Endpoint, Notification
from notifications.services import ALIAS
from notifications.signing import signed_headers
from paysys.core import http

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


def deliver_due(*, budget_seconds: float | None = None, drain: bool = True) -> PassResult:
    """One delivery pass.

    With ``drain`` the pass returns only when every request it started is recorded (commands,
    tests); without (the worker's task), a pass that reaches its deadline returns at once and
    leaves slow requests to the next pass of this process."""
    budget = settings.NOTIFY_PASS_SECONDS if budget_seconds is None else budget_seconds
    return DeliveryPass().run(budget, drain=drain)


class DeliveryPass:
    """One pass of :func:`deliver_due`; its clock is :meth:`now`."""

    def __init__(self) -> None:
        self.flight = flight.this_process()
        self._disabled_cache: dict[int, str] = {}
        self._disabled_at: float | None = None
        self._secrets_cache: dict[int, list[str]] = {}
        self._secrets_at = 0.0
        self.result = PassResult()

    def now(self) -> datetime:
        """The time due records are found and retries scheduled by (a request's
        ``webhook-timestamp`` is always the real time)."""
        return timezone.now()

    @property
    def in_flight(self) -> int:
        return self.flight.count

    def run(self, budget: float, *, drain: bool = True) -> PassResult:
        started = time.monotonic()
        deadline = started + budget
        try:
            while time.monotonic() < deadline:
                self._record_attempts(self._drain())
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
            self._record_attempts(self._drain())
            # the requests still running finish within the total timeout: wait for them, or
            # leave them to the next pass here (a killed process loses them to the lease only)
            while drain and self.in_flight:
                self._wait(settings.NOTIFY_TOTAL_TIMEOUT + 5)
                self._record_attempts(self._drain())
        self.result.seconds = round(time.monotonic() - started, 3)
        self.result.busy = time.monotonic() >= deadline
        return self.result

    def _until_next_due(self) -> float | None:
        """Seconds until the next record this pass could claim is due (0 if one is due now),
        None if none is."""
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

    def _drain(self) -> list[InFlight]:
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
        started: list[InFlight] = []
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
            item = InFlight(
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

    def _record_attempts(self, items: list[InFlight]) -> None:
        if not items:
            return
        try:
            recorded = record_attempts(items, now=self.now())
            self.result.succeeded += recorded.succeeded
            self.result.failed += recorded.failed
            self.result.exhausted += recorded.exhausted
        finally:
            # unrecorded (database down): their leases expire and they are sent again
            self.flight.remove(items)


def _merchant_secrets(merchant_ids: set[int]) -> dict[int, list[str]]:
    from paysys.core.models import Merchant  # core identity: every app may read it
    from paysys.core.services import merchant_webhook_secrets

    return {m.pk: merchant_webhook_secrets(m) for m in Merchant.objects.filter(pk__in=merchant_ids)}
