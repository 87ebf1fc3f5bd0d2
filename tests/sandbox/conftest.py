"""Bank simulator fixtures: platform orders and their pay links, a real notify endpoint."""

from __future__ import annotations

import itertools
import socket
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from orders.creation import order_create, order_pay_url

_numbers = itertools.count(1)


def pay_path(order) -> str:
    """The path of the order's pay link (the link itself carries PUBLIC_BASE_URL)."""
    return urlsplit(order_pay_url(order)).path


def sandbox_auth() -> dict:
    """The header the sandbox's control endpoints (release, pay with test options) need."""
    return {"Authorization": f"Bearer {settings.SANDBOX_TOKEN}"}


def pay(order, options: dict | None = None, **headers):
    """Pay the order as a program does: POST the pay link, optional JSON test options (sent with
    the sandbox token unless ``headers`` say otherwise)."""
    headers = headers or (sandbox_auth() if options else {})
    return Client().post(
        pay_path(order), options or {}, content_type="application/json", headers=headers
    )


@pytest.fixture
def make_order(merchant, payer):
    def make(amount: int = 1234, subject: str = "a book"):
        order, _ = order_create(
            merchant=merchant,
            merchant_order_no=f"BANK-{next(_numbers)}",
            amount=amount,
            currency="CNY",
            subject=subject,
            payer_id=payer.pk,
        )
        return order

    return make


@pytest.fixture
def order(make_order):
    return make_order()


@pytest.fixture
def gateway_url(live_server, settings) -> str:
    """The platform's real notify intake, served over HTTP; the bank notifies it."""
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    return settings.BANK_NOTIFY_URL


@pytest.fixture
def dead_url() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gateway/bank/notify"
