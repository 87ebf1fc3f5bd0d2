"""The relay: due rows shipped once per round, resent on schedule, then DEAD."""

from datetime import timedelta

import pytest
from django.utils import timezone

from paysys.messaging import relay
from paysys.messaging.models import Message
from tests.concurrency import run_at_once
from tests.messaging.helpers import publish_ping

pytestmark = pytest.mark.django_db(databases="__all__")


# --- relay, resend schedule, dead -----------------------------------------------------------


def test_relay_ships_due_rows_and_schedules_the_resend(ship, settings):
    settings.MESSAGE_RESEND_SCHEDULE = [0, 60, 120, 300, 900]
    publish_ping()
    now = timezone.now()

    sent = relay.relay_due("orders", now=now)

    assert sent == 2 and len(ship.ids) == 2
    for row in Message.objects.using("orders"):
        assert row.send_count == 1
        assert row.next_send_at == now + timedelta(seconds=60)
    assert relay.relay_due("orders", now=now) == 0  # not due again yet


def test_unconsumed_message_is_resent_on_schedule_then_dead(ship, settings):
    settings.MESSAGE_RESEND_SCHEDULE = [0, 60, 120, 300, 900]
    publish_ping()
    row_id = Message.objects.using("orders").order_by("id").first().id
    now = timezone.now()
    waits = []

    for _ in range(5):
        assert relay.relay_due("orders", now=now) == 2
        row = Message.objects.using("orders").get(id=row_id)
        waits.append(round((row.next_send_at - now).total_seconds()))
        now = row.next_send_at

    assert waits == [60, 120, 300, 900, 900]
    assert relay.relay_due("orders", now=now) == 0
    assert set(Message.objects.using("orders").values_list("status", flat=True)) == {"DEAD"}


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_concurrent_relay_passes_send_each_row_once(ship):
    for n in range(40):
        publish_ping({"n": n})
    run_at_once(*[lambda: relay.relay_due("orders")] * 4)

    assert len(ship.ids) == 80
    assert len(set(ship.ids)) == 80
    assert set(Message.objects.using("orders").values_list("send_count", flat=True)) == {1}
