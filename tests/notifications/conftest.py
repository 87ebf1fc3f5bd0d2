"""Fixtures for notification delivery: a real merchant server, and order.paid events for it."""

from __future__ import annotations

import pytest

from notifications.services import notification_create_for_order_paid
from tests.notifications.factories import order_paid
from tests.notifications.receiver import Receiver


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def notify(receiver):
    """``notify(merchant, path="/notify")``: a record for a new paid order, due now."""

    def make(merchant, path: str = "/notify", **overrides):
        return notification_create_for_order_paid(
            order_paid(merchant, notify_url=receiver.url(path), **overrides)
        )

    return make


@pytest.fixture(autouse=True)
def _forget_dns_answers():
    """Delivery keeps DNS answers a few seconds; tests make names resolve differently."""
    from paysys.core import http

    http._dns_cache.clear()
    yield
    http._dns_cache.clear()
