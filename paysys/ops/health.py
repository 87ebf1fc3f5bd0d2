"""The state of every service at a glance: its workers, its database, its backlog and the age of
its oldest pending work. One computation serves ``/healthz/detail`` (JSON) and the admin overview.

Backlog per service: the messages waiting for its queues (in every outbox), its participants'
unfinished TCC phase two, and for notifications the records due. Each read is an index range
over pending rows only (the scrape's queries), never history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from notifications.metrics import notify_stats
from paysys.celery import app as celery_app
from paysys.core import heartbeats
from paysys.core.views import database_states
from paysys.messaging.metrics import OutboxStats, outbox_stats_by_alias
from paysys.messaging.models import Message
from paysys.tcc.selectors import needs_human_count, phase_two_backlog

logger = logging.getLogger(__name__)

Status = Message.Status
BROKER_TIMEOUT = 2  # seconds to reach the broker


def service_queues() -> dict[str, list[str]]:
    """service -> the queues its workers consume (its own, and the side queues it owns)."""
    side = {
        "core": [settings.MESSAGE_CHECK_BACK_QUEUE, settings.MAINTENANCE_QUEUE],
        "orders": ["polling"],
        "notifications": [settings.NOTIFY_DELIVERY_QUEUE],
    }
    return {
        service: [service, *side.get(service, [])]
        for service in settings.SERVICE_ALIASES.values()
        if service in settings.SERVICE_QUEUES  # sandbox: if enabled
    }


@dataclass
class Waiting:
    """Messages of one state waiting for one queue in one outbox (alias)."""

    alias: str
    queue: str
    count: int


@dataclass
class ServiceHealth:
    service: str
    alias: str
    database: str
    workers: dict[str, heartbeats.Liveness]
    pending: list[Waiting] = field(
        default_factory=list
    )  # SENDING / PREPARED messages for its queues
    dead: list[Waiting] = field(default_factory=list)
    oldest_message_at: datetime | None = None
    phase_two: int = 0
    oldest_decision_at: datetime | None = None

    @property
    def workers_alive(self) -> bool:
        return all(state.alive for state in self.workers.values())

    @property
    def pending_count(self) -> int:
        return sum(w.count for w in self.pending)

    @property
    def dead_count(self) -> int:
        return sum(w.count for w in self.dead)

    @property
    def oldest_pending_at(self) -> datetime | None:
        times = [at for at in (self.oldest_message_at, self.oldest_decision_at) if at is not None]
        return min(times) if times else None


@dataclass
class Health:
    at: datetime
    services: list[ServiceHealth]
    beat: heartbeats.Liveness
    broker: str
    databases: dict[str, str]
    tcc_needs_human: int | None
    notifications: dict | None  # notify_stats(), None while its database is down

    @property
    def ok(self) -> bool:
        return (
            self.broker == "ok"
            and self.beat.alive
            and all(state == "ok" for state in self.databases.values())
            and all(s.workers_alive for s in self.services)
        )


def broker_state() -> str:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is "down", with its class
        return f"down: {exc.__class__.__name__}"
    return "ok"


@dataclass
class Problem:
    service: str
    detail: str
    what: str = "database unavailable"


class Reader:
    """Runs selectors for an operator's page: a database that does not answer becomes one of
    ``problems`` (shown on the page) and the default, never an error page."""

    def __init__(self):
        self.problems: list[Problem] = []

    def __call__(self, service: str, read, default=None):
        try:
            return read()
        except DatabaseError as exc:
            logger.warning("the %s database did not answer", service, exc_info=True)
            self.problems.append(Problem(service, exc.__class__.__name__))
            return default


def health() -> Health:
    now = timezone.now()
    databases = database_states()
    liveness = heartbeats.liveness()
    outboxes: dict[str, OutboxStats | None] = outbox_stats_by_alias(
        [alias for alias, state in databases.items() if state == "ok"], consumed=False
    )
    read = Reader()
    phase_two = read("core", phase_two_backlog, {})
    aliases = {service: alias for alias, service in settings.SERVICE_ALIASES.items()}
    services = []
    for service, queues in service_queues().items():
        row = ServiceHealth(
            service,
            aliases[service],
            databases.get(aliases[service], "unknown"),
            {queue: liveness[queue] for queue in queues},
        )
        for alias, stats in outboxes.items():
            for queue in queues:
                if stats is None:
                    continue
                pending = stats.count(queue, Status.SENDING) + stats.count(queue, Status.PREPARED)
                if pending:
                    row.pending.append(Waiting(alias, queue, pending))
                if stats.count(queue, Status.DEAD):
                    row.dead.append(Waiting(alias, queue, stats.count(queue, Status.DEAD)))
                oldest = stats.oldest_pending_by_queue.get(queue)
                if oldest and (row.oldest_message_at is None or oldest < row.oldest_message_at):
                    row.oldest_message_at = oldest
        row.phase_two, row.oldest_decision_at = phase_two.get(service, (0, None))
        services.append(row)
    return Health(
        at=now,
        services=services,
        beat=liveness[heartbeats.BEAT],
        broker=broker_state(),
        databases=databases,
        tcc_needs_human=read("core", needs_human_count),
        notifications=read("notifications", notify_stats),
    )


def _age(now: datetime, at: datetime | None) -> float | None:
    return None if at is None else round(max((now - at).total_seconds(), 0.0), 1)


def health_json(state: Health) -> dict:
    """``/healthz/detail``'s document."""
    now = state.at
    return {
        "status": "ok" if state.ok else "degraded",
        "at": now.isoformat(),
        "databases": state.databases,
        "broker": state.broker,
        "beat": state.beat.as_json(),
        "services": {
            s.service: {
                "database": s.database,
                "workers": {queue: live.as_json() for queue, live in s.workers.items()},
                "messages_pending": s.pending_count,
                "messages_dead": s.dead_count,
                "oldest_message_seconds": _age(now, s.oldest_message_at),
                "tcc_phase_two_pending": s.phase_two,
                "oldest_tcc_decision_seconds": _age(now, s.oldest_decision_at),
            }
            for s in state.services
        },
        "tcc_needs_human": state.tcc_needs_human,
        "notifications": None
        if state.notifications is None
        else {
            "due": state.notifications["due"],
            "pending": state.notifications["pending"],
            "oldest_due_seconds": round(state.notifications["oldest_due_seconds"], 1),
        },
    }
