from celery import shared_task
from django.core.cache import cache

from paysys.messaging import consumption, kicks, recovery
from paysys.messaging import relay as relaying


@shared_task(name="messaging.relay")
def relay(alias: str) -> int:
    # each batch's consume kicks the next pass
    return kicks.RELAY.run_pass(lambda: relaying.relay_due(alias, paced=True), target=alias)


@shared_task(name="messaging.consume")
def consume(origin: str, deliveries: list[dict], slot: str | None = None) -> dict:
    try:
        return consumption.consume_batch(origin, deliveries)
    finally:
        if slot:  # a paced batch: its queue is free, and what waited meanwhile goes next
            cache.delete(slot)
            kicks.kick_relay(origin)


@shared_task(name="messaging.recover_messages")
def recover_messages() -> dict:
    """Resend due messages (core queue). Check-backs run in their own task, below."""
    return {"resent": recovery.resend_due()}


@shared_task(name="messaging.check_back")
def check_back() -> dict:
    """Ask producers about stale PREPARED messages, on MESSAGE_CHECK_BACK_QUEUE's own worker."""
    return {"checked": recovery.check_back_stale()}
