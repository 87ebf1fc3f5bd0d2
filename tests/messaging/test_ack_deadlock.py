"""A consumer's acknowledgement that InnoDB picks as a deadlock's victim runs again
(``paysys.core.sql.retry_deadlock_victim``): it sets the rows CONSUMED, so running it twice is
safe, and a lost ack would leave its messages SENDING until recovery resends them a minute later.

A real deadlock on MariaDB: another transaction holds the second message and, once the ack waits
on it, asks for the first, which the ack holds; the other transaction has written more rows, so
InnoDB rolls the ack back."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections

from paysys.messaging.consumption import acknowledge
from paysys.messaging.models import Message

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def _message(status: str, n: int) -> Message:
    return Message.objects.create(
        topic="test.topic", consumer=f"test.consumer{n}", queue="core", payload={}, status=status
    )


def _deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        return int(cursor.fetchone()[1])


@pytest.mark.skipif(connection.vendor != "mysql", reason="a real InnoDB deadlock needs MariaDB")
def test_an_ack_rolled_back_as_a_deadlocks_victim_runs_again():
    first, second = _message("SENDING", 1), _message("SENDING", 2)
    heavy = [
        _message("CONSUMED", 10 + n).pk for n in range(50)
    ]  # weight: the other side wrote more
    holding, other_done, other_error = threading.Event(), threading.Event(), []

    def other():
        try:
            conn = connections.create_connection("default")
            with conn.cursor() as cursor:
                cursor.execute("SET autocommit = 0")
                cursor.execute(
                    f"UPDATE messaging_message SET last_error = 'x' WHERE id IN ({', '.join(map(str, heavy))})"
                )
                cursor.execute(
                    f"UPDATE messaging_message SET last_error = 'x' WHERE id = {second.pk}"
                )
                holding.set()
                time.sleep(1.0)  # the ack now holds the first and waits for the second
                cursor.execute(
                    f"UPDATE messaging_message SET last_error = 'y' WHERE id = {first.pk}"
                )
                time.sleep(0.3)
                cursor.execute("COMMIT")
            conn.close()
        except Exception as exc:  # noqa: BLE001 - asserted below
            other_error.append(exc)
        finally:
            other_done.set()

    before = _deadlocks()
    thread = threading.Thread(target=other)
    thread.start()
    assert holding.wait(10)

    acked = acknowledge("default", [first.pk, second.pk])

    assert other_done.wait(30)
    thread.join()
    assert other_error == []  # the other transaction was not the victim: the ack was
    assert _deadlocks() == before + 1
    assert acked == 2
    assert set(
        Message.objects.filter(pk__in=[first.pk, second.pk]).values_list("status", flat=True)
    ) == {"CONSUMED"}
