"""Helpers of the embedded-broker soak test (tests/core/test_embedded_soak.py), run in its processes.

Workers import this module (``celery worker --include tests.core.soak_tasks``) for the task that
records each message it receives; ``python -m tests.core.soak_tasks FIRST COUNT`` is one
publisher process sending messages FIRST..FIRST+COUNT-1 round-robin to every service queue.
"""

from __future__ import annotations

import os
import sys

from celery import shared_task

RECORD_FILE = "SOAK_RECORD_FILE"


@shared_task(name="soak.record", ignore_result=True)
def record(n: int) -> None:
    # one short O_APPEND write per line: lines from several workers never interleave
    fd = os.open(os.environ[RECORD_FILE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)


def publish(first: int, count: int) -> None:
    from django.conf import settings

    from paysys.celery import app

    queues = settings.SERVICE_QUEUES
    with app.producer_or_acquire() as producer:
        for n in range(first, first + count):
            queue = queues[n % len(queues)]
            app.send_task(
                "soak.record", args=[n], queue=queue, routing_key=queue, producer=producer
            )


if __name__ == "__main__":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paysys.settings")
    django.setup()
    publish(int(sys.argv[1]), int(sys.argv[2]))
