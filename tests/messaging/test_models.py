import itertools

import pytest
from django.utils import timezone

from paysys.messaging import actions, consumption, outbox
from paysys.messaging.models import Message
from tests.messaging.helpers import force_status

pytestmark = pytest.mark.django_db(databases="__all__")

Status = Message.Status
LEGAL = {
    (Status.PREPARED, Status.SENDING),
    (Status.PREPARED, Status.DEAD),
    (Status.SENDING, Status.SENDING),
    (Status.SENDING, Status.CONSUMED),
    (Status.SENDING, Status.DEAD),
    (Status.DEAD, Status.SENDING),
    (Status.DEAD, Status.CONSUMED),
}


def row_in(status: str) -> Message:
    now = timezone.now()
    return Message.objects.using("orders").create(
        topic="test.state",
        consumer="c",
        queue="accounting",
        payload={},
        status=status,
        next_send_at=now,
        confirmed_at=None if status == Status.PREPARED else now,
    )


@pytest.mark.parametrize("old,new", list(itertools.product(Status.values, repeat=2)))
def test_only_the_moves_in_the_table_happen(old, new):
    row = row_in(old)

    moved = Message.objects.using("orders").filter(pk=row.pk).transition(new)

    assert moved == ((old, new) in LEGAL)
    row.refresh_from_db()
    assert row.status == (new if moved else old)


def test_consumed_is_final():
    assert Message.TRANSITIONS[Status.CONSUMED] == set()


def test_a_status_never_changes_outside_the_table():
    row = row_in(Status.CONSUMED)

    with pytest.raises(
        TypeError, match=r"^a message's status changes only through transition\(\)$"
    ):
        Message.objects.using("orders").filter(pk=row.pk).update(status=Status.SENDING)

    assert Message.objects.using("orders").get(pk=row.pk).status == Status.CONSUMED


def test_a_late_resend_leaves_a_consumed_message_alone(kicked):
    """A human resends a row whose acknowledgement lands first: it stays consumed, unsent."""
    consumed, dead = row_in(Status.CONSUMED), row_in(Status.DEAD)

    assert actions.resend("orders", [consumed.pk, dead.pk]) == 1

    statuses = dict(Message.objects.using("orders").values_list("pk", "status"))
    assert statuses == {consumed.pk: Status.CONSUMED, dead.pk: Status.SENDING}
    assert kicked == ["orders"]


def test_a_late_confirm_leaves_a_consumed_message_alone():
    row = row_in(Status.PREPARED)
    force_status(Message.objects.using("orders").filter(pk=row.pk), Status.CONSUMED)

    assert outbox.confirm(row.message_id, using="orders") == 0
    assert Message.objects.using("orders").get(pk=row.pk).status == Status.CONSUMED


def test_acknowledging_a_prepared_message_changes_nothing():
    """Only a message that was sent can be consumed: an ack naming a PREPARED row is stale."""
    row = row_in(Status.PREPARED)

    assert consumption.acknowledge("orders", [row.pk]) == 0
    assert Message.objects.using("orders").get(pk=row.pk).status == Status.PREPARED
