from celery import shared_task
from django.core.cache import cache

from notifications import delivery
from notifications.services import KICK_KEY, request_delivery


@shared_task(name="notifications.deliver_due")
def deliver_due() -> dict:
    """One delivery pass (beat every second, and kicked after a record is created or resent).
    It does not wait out slow requests at its end: the next pass in this process records them."""
    cache.delete(KICK_KEY)  # a record made due while this pass runs kicks the next one
    result = delivery.deliver_due(drain=False)
    if result.busy:  # the next pass starts now, not at the next beat: no gap in claiming
        request_delivery()
    return result.as_dict()
