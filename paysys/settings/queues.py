"""Celery: the broker, one queue per service (paysys/topology.py), settings that never lose a
task, and the beat schedule. Fixed, but for the broker's URL and the simulator's queue."""

from __future__ import annotations

import os

from kombu import Queue

from paysys import topology
from paysys.settings.deployment import SANDBOX_ENABLED, VAR_DIR
from paysys.settings.framework import TIME_ZONE

# one queue and worker per service (paysys/topology.py), "polling" orders' own bank-asking one
SERVICE_QUEUES = [
    worker.queue for worker in topology.workers(sandbox=SANDBOX_ENABLED) if worker.service
]
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's filesystem transport with atomic publishes (paysys/core/broker.py: kombu's own can
    # hand a worker a half-written file, which kills it, and lose the message)
    CELERY_BROKER_TRANSPORT = "paysys.core.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "staging_folder": str(_broker_dir / "staging"),  # messages are written here, then renamed
        "claimed_folder": str(_broker_dir / "claimed"),
        "failed_folder": str(_broker_dir / "failed"),  # undecodable files, set aside
        "store_processed": False,
        "polling_interval": 0.05,
    }
    # prefork workers poll a non-async transport about once per second per task; the solo pool
    # consumes back to back (it cannot enforce time limits: an embedded-mode trade-off)
    CELERY_WORKER_POOL = "solo"
else:
    # longer than any countdown paysys uses (CELERY_MAX_COUNTDOWN), so no early redelivery
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_MAX_COUNTDOWN = 600
# queues of their own, off the payment path (paysys/topology.py)
NOTIFY_DELIVERY_QUEUE = "notify_delivery"
MESSAGE_CHECK_BACK_QUEUE = "check_back"
MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_QUEUES = [
    Queue(worker.queue, routing_key=worker.queue)
    for worker in topology.workers(sandbox=SANDBOX_ENABLED)
]
CELERY_TASK_DEFAULT_QUEUE = "core"
CELERY_TASK_ROUTES = topology.task_routes(sandbox=SANDBOX_ENABLED)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "paysys.core.schedules:Scheduler"
# Beat schedules live here, in code; paysys.core.schedules syncs them into django-celery-beat
# after every migrate and when beat starts (entries removed here are removed there too).
CELERY_BEAT_SCHEDULE = {
    "orders.close_expired_orders": {"task": "orders.close_expired_orders", "schedule": 30.0},
    "messaging.recover_messages": {"task": "messaging.recover_messages", "schedule": 5.0},
    "messaging.check_back": {"task": "messaging.check_back", "schedule": 5.0},
    "orders.poll_bank": {"task": "orders.poll_bank", "schedule": 1.0},
    "orders.poll_bank_refunds": {"task": "orders.poll_bank_refunds", "schedule": 5.0},
    "notifications.deliver_due": {"task": "notifications.deliver_due", "schedule": 1.0},
    "tcc.recover_tcc": {"task": "tcc.recover_tcc", "schedule": 2.0},
    "tcc.purge_barriers": {"task": "tcc.purge_barriers", "schedule": 3600.0},
    "paysys.purge_history": {"task": "paysys.purge_history", "schedule": 60.0},
    "paysys.reconcile": {
        "task": "paysys.reconcile",
        "schedule": 86400.0,
    },  # daily; reports in admin
}
if SANDBOX_ENABLED:
    CELERY_BEAT_SCHEDULE["sandbox.resend_bank_notifies"] = {
        "task": "sandbox.resend_bank_notifies",
        "schedule": 5.0,
    }
