"""Fixtures for notification delivery: a real merchant server, and order.paid events for it."""

from __future__ import annotations

import itertools
import random

import pytest

from notifications.services import notification_create_for_order_paid
from paysys.contracts import OrderPaid
from tests.notifications.receiver import Receiver

_orders = itertools.count(random.randrange(10**9, 2 * 10**9))


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def order_paid(merchant, *, notify_url: str = "", **overrides) -> OrderPaid:
    n = next(_orders)
    fields = dict(
        order_id=n, out_trade_no=f"P{n:020d}", merchant_id=merchant.pk, merchant_order_no=f"M-{n}", payer_id=11,
        amount=1234, currency="CNY", fee=7, bank_trade_no=f"B{n:012d}", paid_at="2026-01-02T03:04:05+00:00",
        notify_url=notify_url, method="bank", points_awarded=12,
    )
    fields.update(overrides)
    return OrderPaid(**fields)


@pytest.fixture
def notify(receiver):
    """``notify(merchant, path="/notify")``: a record for a new paid order, due now."""

    def make(merchant, path: str = "/notify", **overrides):
        return notification_create_for_order_paid(order_paid(merchant, notify_url=receiver.url(path), **overrides))

    return make


@pytest.fixture(autouse=True)
def _forget_dns_answers():
    """Delivery keeps DNS answers a few seconds; tests make names resolve differently."""
    from notifications import http

    http._dns_cache.clear()
    yield
    http._dns_cache.clear()
