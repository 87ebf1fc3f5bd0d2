"""Relay kicks: after commit only, coalesced, never blocking the producer."""

import threading
import time

import pytest

from paysys.messaging import kicks
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
    started = time.monotonic()
    for _ in range(20):
        kicks.request_relay("orders")
    assert time.monotonic() - started < 0.5  # the producers did not wait

    release.set()
    assert kicks.flush_relay_requests()
    assert 1 <= kicked.count("orders") <= 2
