from celery import shared_task
from django.core.cache import cache

from paysys.messaging import consumption, kicks, recovery, relay as relaying


@shared_task(name="messaging.relay")
def relay(alias: str) -> int:
    # clear the kick first: a commit landing while this pass runs kicks the next one
    cache.delete(kicks.kick_key(alias))
    sent = relaying.relay_due(alias)
    if sent >= relaying.CLAIM_LIMIT:  # more may be due: continue in a fresh task, after the consumes queued meanwhile
        kicks.kick_relay(alias)
    return sent


@shared_task(name="messaging.consume")
def consume(origin: str, deliveries: list[dict]) -> dict:
    return consumption.consume_batch(origin, deliveries)


@shared_task(name="messaging.recover_messages")
def recover_messages() -> dict:
    return recovery.recover_messages()
