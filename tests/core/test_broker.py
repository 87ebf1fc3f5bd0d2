"""The embedded broker's transport (paysys/core/broker.py): atomic publishes, claims by rename,
undecodable files set aside. Threads publish and consume at once as the stack's processes do;
kombu's own filesystem transport fails these (a consumer reads a half-written file)."""

from __future__ import annotations

import logging
import threading
from queue import Empty

import pytest
from kombu import Connection

from paysys.core.broker import Transport
from tests.concurrency import run_at_once


@pytest.fixture
def broker_options(tmp_path):
    root = tmp_path / "broker"
    (root / "queue").mkdir(parents=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "control_folder": str(root / "control"),
        "processed_folder": str(root / "processed"),
        "polling_interval": 0.01,
    }


def channel(options):
    return Connection(transport=Transport, transport_options=options).default_channel


def test_messages_published_while_consumers_poll_are_each_received_once(broker_options):
    # given: four publishers and four consumers sharing one queue folder, each with its own channel
    per_publisher, publishers = 300, 4
    received: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    done = threading.Event()

    def publish(first: int):
        ch = channel(broker_options)
        for n in range(first, first + per_publisher):
            ch._put(
                "q", {"n": n, "body": "x" * 2000}
            )  # a body large enough to be written in pieces

    def consume():
        ch = channel(broker_options)
        while not done.is_set():
            try:
                payload = ch._get("q")
            except Empty:
                continue
            except BaseException as exc:  # noqa: BLE001 - a worker would die of it; the test reports it
                errors.append(exc)
                done.set()
                return
            with lock:
                received.append(payload["n"])
                if len(received) == per_publisher * publishers:
                    done.set()

    # when: they run at once
    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for t in consumers:
        t.start()
    try:
        run_at_once(*[lambda first=i * per_publisher: publish(first) for i in range(publishers)])
        done.wait(timeout=60)
    finally:
        done.set()
        for t in consumers:
            t.join(timeout=10)

    # then: every message arrived exactly once, whole
    assert errors == []
    assert sorted(received) == list(range(per_publisher * publishers))


def test_an_undecodable_file_is_set_aside_with_an_error_and_the_next_message_is_delivered(
    broker_options, tmp_path, caplog
):
    # given: a broken file ahead of a good message in the queue
    queue_dir = tmp_path / "broker" / "queue"
    (queue_dir / "0000_broken.q.msg").write_bytes(b"")
    (queue_dir / "0001_garbage.q.msg").write_bytes(b"\xff\xfe not json")
    ch = channel(broker_options)
    ch._put("q", {"n": 1})

    # when: a consumer polls
    with caplog.at_level(logging.ERROR, logger="paysys.core.broker"):
        payload = ch._get("q")

    # then: it gets the good message; the broken files are kept aside and reported, not fatal
    assert payload == {"n": 1}
    assert sorted(p.name for p in (tmp_path / "broker" / "failed").iterdir()) == [
        "0000_broken.q.msg",
        "0001_garbage.q.msg",
    ]
    assert "0000_broken.q.msg" in caplog.text and "cannot be decoded" in caplog.text
    with pytest.raises(Empty):
        ch._get("q")
    assert list(queue_dir.iterdir()) == []


def test_a_consumer_takes_only_its_own_queue(broker_options):
    ch = channel(broker_options)
    ch._put("orders", {"n": 1})
    with pytest.raises(Empty):
        ch._get("order")  # a prefix of another queue's name
    assert ch._get("orders") == {"n": 1}


def test_exchange_bindings_made_at_once_are_all_kept_and_readable_meanwhile(broker_options):
    # given: ten processes' channels declaring their queue on one exchange while others route
    queues = [f"q{i}" for i in range(10)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_tables():
        ch = channel(broker_options)
        while not stop.is_set():
            try:
                ch.get_table("celery")
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                errors.append(exc)

    readers = [threading.Thread(target=read_tables) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        run_at_once(
            *[lambda q=q: channel(broker_options)._queue_bind("celery", q, None, q) for q in queues]
        )
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=10)

    # then: every binding is in the table and no reader ever saw a partial one
    assert errors == []
    assert sorted(q.queue for q in channel(broker_options).get_table("celery")) == sorted(queues)
