"""Recovery's check-back: stale PREPARED messages resolved by asking their producer, through a
registered resolver or over HTTP at its check-back URL."""

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from paysys.core.models import Payer
from paysys.messaging import kicks, outbox, recovery, registry
from paysys.messaging.models import Message
from tests.faults.harness import wait_for
from tests.messaging.helpers import Raw, RawServer, trickle

pytestmark = pytest.mark.django_db(databases="__all__")


@registry.consumer("test.check_back", queue="accounting", name="accounting.test_check_back")
def on_message(message):
    pass


class Producer(BaseHTTPRequestHandler):
    """Answers from ``server.verdicts``: business key -> COMMITTED / ROLLED_BACK / UNKNOWN / (500)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.asked.append(body)
        verdict = self.server.verdicts.get(body["business_key"], "UNKNOWN")
        if verdict == 500:
            self.send_response(500)
            self.end_headers()
            return
        payload = json.dumps({"status": verdict}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def producer():
    server = HTTPServer(("127.0.0.1", 0), Producer)
    server.verdicts, server.asked = {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_kick(monkeypatch):
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)


def prepare(producer, business_key):
    url = f"http://127.0.0.1:{producer.server_port}/check-back"
    return outbox.prepare(
        "test.check_back", {"k": business_key}, business_key=business_key, check_back=url
    )


def statuses(message_id):
    return set(Message.objects.filter(message_id=message_id).values_list("status", flat=True))


def later(settings):
    return timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)


@pytest.mark.parametrize(
    "verdict,expected",
    [
        ("COMMITTED", {"SENDING"}),
        ("ROLLED_BACK", set()),
        ("UNKNOWN", {"PREPARED"}),
        (500, {"PREPARED"}),
        ("maybe", {"PREPARED"}),
    ],
)
def test_check_back_url_verdicts(producer, settings, verdict, expected):
    producer.verdicts["order-9"] = verdict
    message_id = prepare(producer, "order-9")

    recovery.check_back_due("default", now=later(settings))

    assert statuses(message_id) == expected
    assert producer.asked == [{"message_id": str(message_id), "business_key": "order-9"}]


def test_undecided_check_back_records_why_and_waits_an_interval(producer, settings):
    producer.verdicts["k"] = 500
    message_id = prepare(producer, "k")
    now = later(settings)

    recovery.check_back_due("default", now=now)
    recovery.check_back_due("default", now=now)  # not due again yet: not asked twice

    row = Message.objects.get(message_id=message_id)
    assert len(producer.asked) == 1
    assert "500" in row.last_error
    assert row.next_send_at == now + timedelta(seconds=settings.MESSAGE_CHECK_BACK_INTERVAL)


def test_a_fresh_prepared_message_is_not_checked_yet(producer):
    prepare(producer, "fresh")

    assert recovery.check_back_due("default") == 0
    assert producer.asked == []


def test_recover_messages_command_runs_one_pass(producer, settings):
    producer.verdicts["cmd"] = "COMMITTED"
    message_id = prepare(producer, "cmd")
    Message.objects.filter(message_id=message_id).update(
        next_send_at=timezone.now() - timedelta(seconds=1)
    )
    out = StringIO()

    call_command("recover_messages", stdout=out)

    assert statuses(message_id) == {"SENDING"}
    assert "checked back 1 prepared message(s)" in out.getvalue()


# --- check-back through a registered resolver -----------------------------------------------


@pytest.mark.parametrize(
    "business_key,committed,expected",
    [("alice", True, "SENDING"), ("bob", False, None), ("undecided", False, "PREPARED")],
)
def test_check_back_resolves_stale_prepared(business_key, committed, expected, settings):
    """In the producer's own outbox (here orders'), not in core's."""
    if committed:
        Payer.objects.create(name=business_key)
    message_id = outbox.prepare(
        "test.ping", {}, using="orders", business_key=business_key, check_back="test.payer_exists"
    )
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)

    assert recovery.check_back_due("orders", now=later) == 1

    rows = Message.objects.using("orders").filter(message_id=message_id)
    assert set(rows.values_list("status", flat=True)) == ({expected} if expected else set())
    assert set(rows.values_list("check_count", flat=True)) <= {1}


def test_check_back_gives_up_to_dead_after_the_limit(settings):
    settings.MESSAGE_CHECK_BACK_MAX = 3
    message_id = outbox.prepare(
        "test.ping", {}, using="orders", business_key="undecided", check_back="test.payer_exists"
    )
    now = timezone.now()

    for _ in range(3):
        now += timedelta(
            seconds=settings.MESSAGE_CHECK_BACK_DELAY + settings.MESSAGE_CHECK_BACK_INTERVAL
        )
        recovery.check_back_due("orders", now=now)

    rows = Message.objects.using("orders").filter(message_id=message_id)
    assert set(rows.values_list("status", "next_send_at", "check_count")) == {("DEAD", None, 3)}
    assert rows.first().last_error == "check-back undecided after 3 asks: "


def test_a_check_back_decides_for_its_own_message_only(settings):
    """Two stale messages, one producer answer each: neither answer touches the other message."""
    settings.MESSAGE_CHECK_BACK_MAX = 1  # the undecided one gives up at once
    Payer.objects.create(name="alice")
    committed = outbox.prepare(
        "test.ping", {}, using="orders", business_key="alice", check_back="test.payer_exists"
    )
    undecided = outbox.prepare(
        "test.ping", {}, using="orders", business_key="undecided", check_back="nobody.answers"
    )
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)
    fresh = outbox.prepare(
        "test.ping", {}, using="orders", business_key="fresh", check_back="nobody.answers"
    )
    Message.objects.using("orders").filter(message_id=fresh).update(
        next_send_at=later + timedelta(hours=1)
    )

    assert recovery.check_back_due("orders", now=later) == 2
    assert set(
        Message.objects.using("orders").filter(message_id=fresh).values_list("status", "last_error")
    ) == {("PREPARED", "")}

    rows = Message.objects.using("orders")
    assert set(rows.filter(message_id=committed).values_list("status", "last_error")) == {
        ("SENDING", "")
    }
    assert set(rows.filter(message_id=undecided).values_list("status", "last_error")) == {
        ("DEAD", "check-back undecided after 1 asks: no check-back 'nobody.answers' is registered")
    }


def test_check_backs_stop_when_the_pass_is_out_of_time(settings, monkeypatch):
    """A slow producer must not hold up the pass: past its budget the rest wait for the next pass
    (they were pushed an interval forward, so no other pass asks them meanwhile)."""
    clock = iter(range(100))
    monkeypatch.setattr(recovery.time, "monotonic", lambda: next(clock))  # each look: one second on
    ids = [
        outbox.prepare(
            "test.ping", {}, using="orders", business_key=key, check_back="test.payer_exists"
        )
        for key in ("a", "b", "c")  # no such payers: each answer is "rolled back", a discard
    ]
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)

    # one ask per message (a, b, c); the clock reads 0, 1 (not past the deadline), then 2
    asked = recovery.check_back_due("orders", now=later, deadline=1)

    assert asked == 2
    left = Message.objects.using("orders")
    assert set(left.values_list("message_id", flat=True)) == {ids[2]}
    assert set(left.values_list("next_send_at", flat=True)) == {
        later + timedelta(seconds=settings.MESSAGE_CHECK_BACK_INTERVAL)
    }


def test_a_recovery_pass_resends_due_messages_in_every_outbox_and_counts_them(ship, settings):
    settings.MESSAGE_CHECK_BACK_BUDGET = 60
    for alias in ("orders", "accounting"):
        with transaction.atomic(using=alias):
            outbox.publish(
                Raw("test.ping", {"alias": alias}), using=alias
            )  # two consumers: two rows
    ship.shipped.clear()
    Payer.objects.create(name="alice")
    outbox.prepare(
        "test.ping", {}, using="orders", business_key="alice", check_back="test.payer_exists"
    )
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)

    totals = recovery.recover_messages(now=later)

    assert totals == {"resent": 4, "checked": 1}
    assert sorted(alias for alias, _ in ship.shipped) == ["accounting", "orders"]


def test_a_recovery_pass_sends_nothing_before_it_is_due(ship):
    with transaction.atomic(using="orders"):
        outbox.publish(Raw("test.ping", {}), using="orders")
    recovery.recover_messages()  # the first send
    ship.shipped.clear()

    assert recovery.recover_messages() == {"resent": 0, "checked": 0}  # its resend is not due yet
    assert recovery.recover_messages(now=timezone.now() + timedelta(hours=1))["resent"] == 2


def test_a_due_message_that_is_sending_is_never_checked_back(ship, settings):
    with transaction.atomic(using="orders"):
        outbox.publish(Raw("test.ping", {}), using="orders")  # SENDING and due now
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)

    assert recovery.check_back_due("orders", now=later) == 0
    assert set(Message.objects.using("orders").values_list("check_count", flat=True)) == {0}


def test_a_recovery_pass_keeps_to_its_check_back_budget(settings, monkeypatch):
    settings.MESSAGE_CHECK_BACK_BUDGET = 0
    clock = iter(range(100))
    monkeypatch.setattr(recovery.time, "monotonic", lambda: next(clock))
    outbox.prepare(
        "test.ping", {}, using="orders", business_key="a", check_back="test.payer_exists"
    )
    later = timezone.now() + timedelta(seconds=settings.MESSAGE_CHECK_BACK_DELAY + 1)

    assert recovery.recover_messages(now=later) == {"resent": 0, "checked": 0}


def test_an_https_check_back_is_asked_over_http(settings):
    message_id = outbox.prepare(
        "test.check_back",
        {},
        business_key="k",
        check_back="https://127.0.0.1:9/check-back",  # nothing listens
    )

    recovery.check_back_due("default", now=later(settings))

    assert (
        Message.objects.filter(message_id=message_id)
        .first()
        .last_error.startswith("check-back https://127.0.0.1:9/check-back failed")
    )


# --- check-backs go through the guarded client: no redirects, no rebinding, one deadline ------


class Redirector(BaseHTTPRequestHandler):
    """A producer that answers every check-back with a 307 to ``server.location``."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.asked.append(self.path)
        self.send_response(307)
        self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(handler, host="127.0.0.1"):
    server = HTTPServer((host, 0), handler)
    server.verdicts, server.asked = {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def internal():
    """A service inside the platform's network (127.0.0.2, not allowed) that would confirm anything."""
    server = serve(Producer, host="127.0.0.2")
    server.verdicts = {key: "COMMITTED" for key in ("redirected", "rebound")}
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def only_127_0_0_1(settings):
    settings.NOTIFY_ALLOWED_NETWORKS = [
        "127.0.0.1/32"
    ]  # the producers' address; 127.0.0.2 is "internal"


def test_a_check_back_redirect_into_the_platforms_network_is_not_followed(
    internal, only_127_0_0_1, settings
):
    redirector = serve(Redirector)
    redirector.location = f"http://127.0.0.2:{internal.server_port}/check-back"
    try:
        message_id = outbox.prepare(
            "test.check_back",
            {},
            business_key="redirected",
            check_back=f"http://127.0.0.1:{redirector.server_port}/check-back",
        )

        recovery.check_back_due("default", now=later(settings))

        assert redirector.asked == ["/check-back"]
        assert internal.asked == []  # never reached: its COMMITTED never confirms the message
        row = Message.objects.filter(message_id=message_id).first()
        assert statuses(message_id) == {"PREPARED"}
        assert (
            "answered HTTP 307: redirect to " in row.last_error and "not followed" in row.last_error
        )
    finally:
        redirector.shutdown()
        redirector.server_close()


def test_a_check_back_name_rebound_into_the_platforms_network_is_refused_when_asked(
    internal, only_127_0_0_1, settings, monkeypatch
):
    """Accepted while it resolved to a public address; by the time it is asked it resolves to an
    internal one: the address actually connected to is checked, so it is never asked."""
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: (
            [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
            if host == "producer.example"
            else real(host, port, *a, **k)
        ),
    )
    message_id = outbox.prepare(
        "test.check_back",
        {},
        business_key="rebound",
        check_back=f"http://producer.example:{internal.server_port}/cb",
    )

    recovery.check_back_due("default", now=later(settings))

    assert internal.asked == []
    assert statuses(message_id) == {"PREPARED"}
    error = Message.objects.filter(message_id=message_id).first().last_error
    assert "producer.example is not a public address" in error and "127.0.0.2" not in error


@pytest.fixture
def trickler():
    server = RawServer(trickle)
    yield server
    server.stop()


def test_a_trickling_check_back_gives_up_at_its_deadline_and_delays_no_other_answer(
    producer, trickler, settings
):
    settings.MESSAGE_CHECK_BACK_TIMEOUT = 2
    slow = [
        outbox.prepare("test.check_back", {}, business_key=f"slow-{n}", check_back=trickler.url())
        for n in range(3)
    ]
    producer.verdicts["fast"] = "COMMITTED"
    fast = prepare(producer, "fast")
    started = time.monotonic()

    asked = recovery.check_back_due("default", now=later(settings))

    took = time.monotonic() - started
    assert asked == 4 and len(trickler.connections) == 3
    assert (
        2 <= took < 3.5
    )  # one deadline for all four, not a read timeout per byte, nor one after another
    wait_for(
        lambda: len(trickler.closed) == 3, timeout=3, what="the trickling producer to be hung up on"
    )
    assert statuses(fast) == {
        "SENDING"
    }  # its answer counted though three others were still trickling
    for message_id in slow:
        row = Message.objects.filter(message_id=message_id).first()
        assert (row.status, row.last_error) == (
            "PREPARED",
            f"check-back {trickler.url()} failed: no complete answer within 2 s",
        )


def endless_body(conn):
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (8192, b" " * 8192)
    while True:
        conn.sendall(chunk)


def test_a_check_back_answer_is_read_only_up_to_its_cap(settings):
    server = RawServer(endless_body)
    try:
        message_id = outbox.prepare(
            "test.check_back", {}, business_key="big", check_back=server.url()
        )
        started = time.monotonic()

        recovery.check_back_due("default", now=later(settings))

        assert time.monotonic() - started < 1  # cut off at the cap, long before the deadline
        assert statuses(message_id) == {"PREPARED"}
        assert (
            "answered no JSON object"
            in Message.objects.filter(message_id=message_id).first().last_error
        )
    finally:
        server.stop()


# --- check-backs never on the bank payments' path --------------------------------------------


def test_check_backs_run_on_their_own_queue_and_worker_not_the_payments_ones():
    from paysys.celery import app

    route = app.amqp.router.route
    assert (
        route({}, "messaging.check_back")["queue"].name
        == settings.MESSAGE_CHECK_BACK_QUEUE
        == "check_back"
    )
    # bank payments: the gateway's relay and the recovery resends on core, consumption on orders
    assert route({}, "messaging.recover_messages")["queue"].name == "core"
    assert settings.MESSAGE_CHECK_BACK_QUEUE not in settings.SERVICE_QUEUES
    assert settings.CELERY_BEAT_SCHEDULE["messaging.check_back"]["task"] == "messaging.check_back"
    procfile = (settings.BASE_DIR / "Procfile").read_text().splitlines()
    queues = {
        line.split(":")[0]: line.split(" -Q ")[1].split()[0].split(",")
        for line in procfile
        if " -Q " in line
    }
    assert [name for name, consumed in queues.items() if "check_back" in consumed] == ["check-back"]
    assert queues["check-back"] == ["check_back"]  # alone: no payment waits behind a check-back


def test_the_core_recovery_task_never_asks_a_producer(trickler, settings):
    """What the core worker runs every 5 s resends only: a trickling producer cannot hold it."""
    from paysys.messaging import tasks

    message_id = outbox.prepare(
        "test.check_back", {}, business_key="slow", check_back=trickler.url()
    )
    Message.objects.filter(message_id=message_id).update(
        next_send_at=timezone.now() - timedelta(seconds=1)
    )
    started = time.monotonic()

    assert tasks.recover_messages() == {"resent": 0}

    assert time.monotonic() - started < 1 and trickler.connections == []
    settings.MESSAGE_CHECK_BACK_TIMEOUT = 1
    assert tasks.check_back() == {"checked": 1}  # the check-back worker's task asks it
    assert len(trickler.connections) == 1
