"""The messaging management commands: what operators script."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from paysys.messaging.models import Message

pytestmark = pytest.mark.django_db(databases="__all__")

Status = Message.Status


def row(alias: str, queue: str, status: str = Status.DEAD, *, confirmed: bool = True) -> Message:
    now = timezone.now()
    return Message.objects.using(alias).create(
        topic="test.topic",
        consumer=f"{queue}.c",
        queue=queue,
        payload={},
        status=status,
        send_count=5,
        confirmed_at=now if confirmed else None,
    )


def resend_dead(*args: str) -> str:
    out = StringIO()
    call_command("resend_dead_messages", *args, stdout=out)
    return out.getvalue()


def test_resend_dead_messages_resends_the_dead_of_one_queue_in_one_outbox(kicked):
    dead = [row("orders", "accounting"), row("orders", "accounting")]
    other_queue, other_outbox = row("orders", "notifications"), row("default", "accounting")
    sending, consumed = (
        row("orders", "accounting", Status.SENDING),
        row("orders", "accounting", Status.CONSUMED),
    )

    out = resend_dead("--service", "orders", "--queue", "accounting")

    assert out == "resent 2 dead message(s) of queue accounting in orders\n"
    statuses = {m.pk: (m.status, m.send_count) for m in Message.objects.using("orders").all()}
    assert [statuses[m.pk] for m in dead] == [(Status.SENDING, 0)] * 2
    assert statuses[other_queue.pk] == (Status.DEAD, 5)
    assert statuses[sending.pk] == (Status.SENDING, 5)
    assert statuses[consumed.pk] == (Status.CONSUMED, 5)
    assert Message.objects.using("default").get(pk=other_outbox.pk).status == Status.DEAD
    assert kicked == ["orders"]


def test_resend_dead_messages_takes_a_service_name_for_its_alias(kicked):
    row("default", "orders")

    out = resend_dead("--service", "core", "--queue", "orders")

    assert out == "resent 1 dead message(s) of queue orders in default\n"


def test_resend_dead_messages_leaves_never_confirmed_messages_for_a_human(kicked):
    row("default", "orders", confirmed=False)

    out = resend_dead("--service", "default", "--queue", "orders")

    assert out.splitlines() == [
        "resent 0 dead message(s) of queue orders in default",
        "1 never-confirmed message(s) stay DEAD: confirm or discard them in admin",
    ]
    assert Message.objects.using("default").get().status == Status.DEAD
    assert kicked == []


@pytest.mark.parametrize(
    "args,error",
    [
        (["--service", "nowhere", "--queue", "orders"], "unknown service 'nowhere'"),
        (["--service", "orders", "--queue", "nowhere"], "invalid choice: 'nowhere'"),
        (["--queue", "orders"], "--service"),
    ],
)
def test_resend_dead_messages_refuses_what_it_does_not_know(args, error, kicked):
    with pytest.raises(CommandError, match=error):
        resend_dead(*args)
