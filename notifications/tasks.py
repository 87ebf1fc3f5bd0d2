from celery import shared_task

from notifications import delivery
from notifications.services import DELIVERY


@shared_task(name="notifications.deliver_due")
def deliver_due() -> dict:
    """One delivery pass (beat every second, and kicked after a record is created or resent).
    It does not wait out slow requests at its end: the next pass in this process records them."""
    # when busy, the next pass starts now, not at the next beat: no gap in claiming
    return DELIVERY.run_pass(
        lambda: delivery.deliver_due(drain=False), full=lambda result: result.busy
    ).as_dict()
