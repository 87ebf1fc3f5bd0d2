import pytest
from django.db import transaction

from paysys.messaging import outbox
from paysys.messaging.models import Message
from paysys.messaging.selectors import dead_messages, message_rows, overall_status
from tests.messaging.helpers import Raw, force_status, publish_ping

pytestmark = pytest.mark.django_db(databases="__all__")


def test_message_rows_are_one_per_consumer_in_the_given_outbox():
    message_id = publish_ping(alias="orders")

    rows = message_rows(message_id, using="orders")

    assert [r.consumer for r in rows] == ["notifications.test_ping", "accounting.test_ping"]
    assert message_rows(message_id, using="default") == []


@pytest.mark.parametrize(
    "statuses,overall",
    [
        (["CONSUMED", "CONSUMED"], "CONSUMED"),
        (["CONSUMED", "SENDING"], "SENDING"),
        (["SENDING", "DEAD"], "DEAD"),
        (["DEAD", "PREPARED"], "PREPARED"),
    ],
)
def test_overall_status_is_the_least_advanced(statuses, overall):
    assert overall_status([Message(status=s) for s in statuses]) == overall


def test_dead_messages_are_those_of_one_queue():
    with transaction.atomic(using="orders"):
        outbox.publish(Raw("test.ping", {}), using="orders")
    force_status(Message.objects.using("orders"), "DEAD")

    assert [m.queue for m in dead_messages("orders", queue="accounting")] == ["accounting"]
    assert not dead_messages("default", queue="accounting").exists()
