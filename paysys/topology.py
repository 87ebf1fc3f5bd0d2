"""The service topology, declared once: each service's database alias, and each worker's queue.

Settings derive the databases (``SERVICE_ALIASES``), the Celery queues and routes
(``SERVICE_QUEUES``, ``CELERY_TASK_QUEUES``, ``CELERY_TASK_ROUTES``) from it, the router its
models' aliases; the Procfile (read by Procfile runners, so a plain file) and the Makefile's
queues are checked against it (tests/test_topology.py). Plain Python: settings import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Database:
    """A service's database alias; ``service`` names it in DATABASE_URL_<SERVICE> and in its
    schema ``paysys_<service>``. ``app``'s models live there (those whose names start with
    ``model_prefix`` when an app's models span two services); unlisted apps live in default."""

    alias: str
    service: str
    app: str | None = None
    model_prefix: str = ""


@dataclass(frozen=True)
class Worker:
    """A Celery queue and the worker process that consumes it alone. A service queue takes every
    ``<queue>.*`` task (and TCC phase two of its participants); other queues take only ``tasks``,
    named, off the payment path of the service they would otherwise wait behind."""

    queue: str
    tasks: tuple[str, ...] = ()
    service: bool = True
    concurrency: int = 1
    sandbox: bool = False  # the bank simulator's: only where the sandbox is enabled

    @property
    def process(self) -> str:
        """Its name in the Procfile and its Celery node name."""
        return self.queue.replace("_", "-")

    @property
    def command(self) -> str:
        """Its Procfile command. ``-q``: no start-up banner (a screen of ASCII art and
        configuration per worker, a dozen workers in ``make run``); the worker's log still says
        ``<node>@<host> ready.``, which the demo and the tests wait for."""
        return (
            f"celery -A paysys -q worker -Q {self.queue} -n {self.process}@%h "
            f"--concurrency={self.concurrency} --loglevel=INFO --without-gossip --without-mingle"
        )


DATABASES = (
    Database("default", "core"),
    Database("orders", "orders", app="orders"),
    # the accounts app holds two services: fund-side models start with "fund", points-side with "points"
    Database("funds", "funds", app="accounts", model_prefix="fund"),
    Database("points", "points", app="accounts", model_prefix="points"),
    Database("accounting", "accounting", app="accounting"),
    Database("notifications", "notifications", app="notifications"),
    Database("sandbox", "sandbox", app="sandbox"),
)

WORKERS = (
    Worker("core"),
    Worker("orders"),
    # orders' passes that ask the bank (seconds each) run on their own queue, never ahead of payments
    Worker(
        "polling",
        tasks=("orders.poll_bank", "orders.close_expired_orders", "orders.poll_bank_refunds"),
    ),
    Worker("funds"),
    Worker("points"),
    Worker("accounting"),
    Worker("notifications"),
    Worker("sandbox", sandbox=True),
    # notify delivery (long passes with requests in flight) never holds up the notifications
    # worker's consumption of order.paid
    Worker("notify_delivery", tasks=("notifications.deliver_due",), service=False, concurrency=2),
    # message check-backs wait on producers' servers: never ahead of (or behind) the core worker
    # that relays bank payments
    Worker("check_back", tasks=("messaging.check_back",), service=False),
    # housekeeping that is on no payment's path (retention, reconcile)
    Worker("maintenance", tasks=("paysys.purge_history", "paysys.reconcile"), service=False),
)

# the Procfile's other processes
PROCESSES = {"web": "python manage.py serve", "beat": "celery -A paysys beat --loglevel=INFO"}


def workers(*, sandbox: bool) -> list[Worker]:
    return [worker for worker in WORKERS if sandbox or not worker.sandbox]


def procfile() -> dict[str, str]:
    """Process name -> command, as the Procfile says (every worker, the sandbox's included)."""
    return {**PROCESSES, **{worker.process: worker.command for worker in WORKERS}}


def task_routes(*, sandbox: bool) -> dict[str, dict]:
    """Celery routes: the named tasks first, then each service queue's ``<queue>.*``."""
    routes = {task: worker.queue for worker in workers(sandbox=sandbox) for task in worker.tasks}
    routes.update(
        {f"{worker.queue}.*": worker.queue for worker in workers(sandbox=sandbox) if worker.service}
    )
    return {pattern: {"queue": queue, "routing_key": queue} for pattern, queue in routes.items()}
