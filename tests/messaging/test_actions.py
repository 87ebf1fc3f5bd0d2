"""What humans do: resend."""

import pytest

from paysys.messaging import actions, kicks, relay
from paysys.messaging.models import Message
from tests.messaging.helpers import deliver_all, force_status, publish_ping

pytestmark = pytest.mark.django_db(databases="__all__")


def test_resend_clears_dead_and_starts_the_count_over(ship, monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)
    publish_ping()
    force_status(Message.objects.using("orders"), "DEAD", send_count=5, next_send_at=None)

    resent = actions.resend_dead_messages("orders", queue="notifications")

    assert resent == 1
    row = Message.objects.using("orders").get(queue="notifications")
    assert (row.status, row.send_count) == ("SENDING", 0)
    assert Message.objects.using("orders").get(queue="accounting").status == "DEAD"
    relay.relay_due("orders")
    deliver_all("orders", queue="notifications")
    assert Message.objects.using("orders").get(queue="notifications").status == "CONSUMED"
