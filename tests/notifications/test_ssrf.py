"""The SSRF guard holds on the address actually connected to: private, loopback, link-local and
metadata targets are refused unless NOTIFY_ALLOWED_NETWORKS allows them, a name that resolves to
a private address is refused however it was accepted earlier (DNS rebinding), and every refusal
is an attempt with its reason."""

from __future__ import annotations

import socket

import pytest

from notifications.delivery import deliver_due
from notifications.models import Attempt, Notification
from notifications.services import notification_create_for_order_paid
from tests.notifications.conftest import order_paid

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def nothing_private_allowed(settings):
    settings.NOTIFY_ALLOWED_NETWORKS = []  # production: DEBUG off


def send_to(merchant, url: str) -> Attempt:
    record = notification_create_for_order_paid(order_paid(merchant, notify_url=url))
    deliver_due()
    record.refresh_from_db()
    assert record.status == Notification.Status.PENDING  # retried: an operator may allow it later
    return record.attempts.get()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:{port}/notify", "loopback"),
        ("http://10.0.0.1/notify", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:{port}/notify", "loopback"),
        ("http://0.0.0.0:{port}/notify", "unspecified"),
        ("http://[::ffff:127.0.0.1]:{port}/notify", "loopback"),
    ],
)
def test_private_targets_are_refused_with_the_reason(
    merchant, receiver, nothing_private_allowed, url, kind
):
    attempt = send_to(merchant, url.format(port=receiver.port))

    assert (attempt.outcome, attempt.error_class, attempt.status_code, attempt.address) == (
        "refused",
        "refused_target",
        None,
        "",
    )
    assert kind in attempt.error and "NOTIFY_ALLOWED_NETWORKS" in attempt.error
    assert receiver.requests() == []


def test_a_name_resolving_to_a_private_address_is_refused(
    merchant, receiver, nothing_private_allowed, monkeypatch
):
    asked = []

    def rebinding_dns(host, port, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)

    attempt = send_to(merchant, f"http://merchant.example.com:{receiver.port}/notify")

    assert asked == ["merchant.example.com"]
    assert (
        attempt.outcome == "refused"
        and "merchant.example.com is not a public address" in attempt.error
    )
    assert (
        "127.0.0.1" not in attempt.error
    )  # the merchant reads its attempts: nothing of the platform's DNS
    assert receiver.requests() == []


def test_a_name_with_one_private_address_among_public_ones_is_refused(
    merchant, receiver, nothing_private_allowed, monkeypatch
):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
        ],
    )

    attempt = send_to(merchant, "http://merchant.example.com/notify")

    assert attempt.outcome == "refused" and "not a public address" in attempt.error
    assert "10.1.2.3" not in attempt.error and "93.184.216.34" not in attempt.error


def test_an_allowed_network_is_delivered_to_and_connected_by_its_checked_address(
    merchant, receiver, settings, monkeypatch
):
    settings.NOTIFY_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, port, *a, **k: real("127.0.0.1", port, *a, **k)
    )
    record = notification_create_for_order_paid(
        order_paid(merchant, notify_url=f"http://merchant.example.com:{receiver.port}/notify")
    )

    deliver_due()

    record.refresh_from_db()
    attempt = record.attempts.get()
    assert (record.status, attempt.outcome, attempt.address) == (
        "SUCCEEDED",
        "succeeded",
        "127.0.0.1",
    )
    [request] = receiver.requests()
    assert (
        request.headers["host"] == f"merchant.example.com:{receiver.port}"
    )  # the name, though we connected to the IP


def test_ipv6_loopback_is_delivered_when_allowed(merchant, settings):
    from http.server import ThreadingHTTPServer

    from tests.notifications.receiver import Receiver

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    settings.NOTIFY_ALLOWED_NETWORKS = ["::1/128"]
    receiver = Receiver()
    try:
        v6 = V6(("::1", 0), receiver.server.RequestHandlerClass)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    receiver.server.server_close()
    receiver.server, receiver.port = v6, v6.server_address[1]
    import threading

    threading.Thread(target=v6.serve_forever, daemon=True).start()
    try:
        attempt = None
        record = notification_create_for_order_paid(
            order_paid(merchant, notify_url=f"http://[::1]:{receiver.port}/notify")
        )
        deliver_due()
        attempt = record.attempts.get()
        assert (attempt.outcome, attempt.address) == ("succeeded", "::1")
    finally:
        receiver.stop()


def test_a_url_that_is_not_http_is_an_invalid_attempt(merchant, nothing_private_allowed):
    attempt = send_to(merchant, "ftp://merchant.example.com/notify")

    assert (attempt.outcome, attempt.error_class) == ("refused", "invalid_url")
