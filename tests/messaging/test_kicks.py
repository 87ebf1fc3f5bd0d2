"""Relay kicks: after commit only, coalesced, never blocking the producer."""

import threading
import time

import pytest

from paysys.messaging import kicks, tasks
from tests.messaging.helpers import publish_ping

pytestmark = pytest.mark.django_db(databases="__all__")


def test_delivery_is_kicked_only_after_commit(django_capture_on_commit_callbacks, monkeypatch):
    kicked = []
    monkeypatch.setattr(kicks, "kick_relay", kicked.append)

    with django_capture_on_commit_callbacks(using="orders", execute=False) as callbacks:
        publish_ping()
    assert kicked == []

    for callback in callbacks:
        callback()
    assert kicks.flush_relay_requests()  # kicks leave from a background thread
    assert kicked == ["orders"]


def test_kicks_of_many_commits_coalesce_and_never_block_the_commit(monkeypatch):
    release, kicked = threading.Event(), []

    def slow_kick(alias):  # a hung cache or broker
        release.wait(5)
        kicked.append(alias)

    monkeypatch.setattr(kicks, "kick_relay", slow_kick)
    kicker = kicks._Kicker()  # a fresh one: this process's may have a thread from another test
    started = time.monotonic()
    for _ in range(20):
        kicker.submit(["orders"])
    kicker.submit(["accounting"])
    assert time.monotonic() - started < 0.5  # the producers did not wait
    assert kicker.flush(0.05) is False  # a kick is still hanging

    release.set()
    assert kicker.flush(5) is True
    assert 1 <= kicked.count("orders") <= 2
    assert kicked.count("accounting") == 1


def test_flush_waits_at_most_its_timeout(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: release.wait(5))
    kicks.request_relay("orders")

    started = time.monotonic()
    assert kicks.flush_relay_requests(0.1) is False
    assert time.monotonic() - started < 2

    release.set()
    assert kicks.flush_relay_requests() is True


def test_a_kick_asks_the_aliass_queue_for_one_relay_pass_at_a_time(monkeypatch):
    from django.core.cache import cache

    sent = []
    monkeypatch.setattr(tasks.relay, "apply_async", lambda **kwargs: sent.append(kwargs))

    kicks.kick_relay("orders")
    kicks.kick_relay("orders")  # one is pending: coalesced
    assert sent == [{"args": ["orders"], "queue": "orders", "retry": False}]

    cache.delete(kicks.RELAY.key("orders"))  # what the relay task does as it starts
    kicks.kick_relay("orders")
    assert len(sent) == 2


def test_a_kick_the_broker_refuses_does_not_block_the_next(monkeypatch):
    from django.core.cache import cache

    def broker_down(**kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.relay, "apply_async", broker_down)
    kicks.kick_relay("accounting")  # logged, not raised

    assert cache.get(kicks.RELAY.key("accounting")) is None  # the next commit may kick again
