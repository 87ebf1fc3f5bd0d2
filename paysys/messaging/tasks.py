from celery import shared_task
from django.core.cache import cache

from paysys.messaging import services


@shared_task(name="messaging.relay")
def relay(alias: str) -> int:
    # clear the kick first: a commit landing while this pass runs kicks the next one
    cache.delete(f"messaging:kick:{alias}")
    sent = services.relay_due(alias)
    if sent >= services.CLAIM_LIMIT:  # more may be due: continue in a fresh task, after the consumes queued meanwhile
        services.kick_relay(alias)
    return sent


@shared_task(name="messaging.consume")
def consume(origin: str, deliveries: list[dict]) -> dict:
    return services.consume_batch(origin, deliveries)


@shared_task(name="messaging.recover_messages")
def recover_messages() -> dict:
    return services.recover_messages()
