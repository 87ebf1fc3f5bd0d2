"""Helpers for driving the message service in-process, without a broker."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from django.db import transaction

from paysys.core.models import Payer
from paysys.messaging import consumption, outbox, registry
from paysys.messaging.models import InboxEntry, Message
from tests.statuses import force_status  # noqa: F401 (tests import it from here too)

# --- test consumers: "test.ping" has two, one of which writes, so rollback is observable --------

handled: list[dict] = []  # payloads the test.ping consumers ran on (emptied before each test)


@registry.consumer("test.ping", queue="notifications", name="notifications.test_ping")
def on_ping(message):
    if message.payload.get("explode"):
        raise RuntimeError("handler exploded")
    # a real write in the consumer's alias, so rollback is observable
    InboxEntry.objects.using("notifications").create(
        consumer="side-effect", message_id=message.message_id, topic="x"
    )
    handled.append(message.payload)


@registry.consumer("test.ping", queue="accounting", name="accounting.test_ping")
def on_ping_accounting(message):
    handled.append({"accounting": message.payload})


@registry.check_back("test.payer_exists")
def payer_exists(business_key: str):
    """Committed iff a payer of that name exists; "undecided" never decides."""
    if business_key == "undecided":
        return None
    return Payer.objects.filter(name=business_key).exists()


@dataclass(frozen=True)
class Raw:
    """A message of any topic with any payload, for the framework's own tests (test topics, a
    payload that breaks its contract); production code publishes contracts (paysys.contracts)."""

    TOPIC: str
    payload: object

    def to_payload(self) -> object:
        return self.payload


def publish_ping(payload=None, alias="orders"):
    with transaction.atomic(using=alias):
        return outbox.publish(Raw("test.ping", payload or {"n": 1}), using=alias)


def deliveries_for(alias: str, **filters) -> list[dict]:
    """The delivery dicts the relay would ship for the matching outbox rows."""
    return [
        {
            "id": m.id,
            "message_id": str(m.message_id),
            "topic": m.topic,
            "consumer": m.consumer,
            "payload": m.payload,
            "send_count": m.send_count,
        }
        for m in Message.objects.using(alias).filter(**filters).order_by("id")
    ]


def deliver_all(alias: str, **filters) -> dict:
    """Consume every SENDING message of ``alias`` in this process, as a worker would."""
    return consumption.consume_batch(
        alias, deliveries_for(alias, status=Message.Status.SENDING, **filters)
    )


class ShipRecorder:
    """Stands in for the broker hand-off of relay_due: records what would have been sent."""

    def __init__(self):
        self.shipped: list[tuple[str, list[int]]] = []

    def __call__(self, alias, rows, slot=None) -> list[int]:
        self.shipped.append((alias, [r.id for r in rows]))
        return []  # the broker took them all

    @property
    def ids(self) -> list[int]:
        return [i for _, ids in self.shipped for i in ids]


# --- producers no HTTP library would write, for check-backs ----------------------------------


class RawServer:
    """A TCP server whose every connection is handled by ``respond(conn)`` on its own thread:
    for producers no HTTP library would write (a byte at a time, a body without end)."""

    def __init__(self, respond):
        self.respond = respond
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[float] = []  # when each connection came
        self.closed: list[float] = []  # when the client hung up on each
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path="/check-back"):
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(time.monotonic())
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                conn.recv(65536)  # the request (small: one segment)
                self.respond(conn)
            except OSError:
                self.closed.append(time.monotonic())

    def stop(self):
        self.listener.close()


COMMITTED = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{"status": "COMMITTED"}'


def trickle(conn):
    """A whole COMMITTED answer, one byte a second (about 95 s in all)."""
    for byte in COMMITTED:
        conn.sendall(bytes([byte]))
        time.sleep(1)
