"""paysys.core.netguard: the one place deciding which outbound targets are allowed."""

from __future__ import annotations

import socket

import pytest

from paysys.core.netguard import address_refusal, url_refusal


@pytest.fixture(autouse=True)
def production_networks(settings):
    settings.NOTIFY_ALLOWED_NETWORKS = []  # production: nothing private allowed


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",  # 6to4 carrying 127.0.0.1 and 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
    ],  # Teredo carrying 127.0.0.1 (its bits inverted)
)
def test_internal_addresses_are_refused_also_inside_ipv6(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1",
        "feff::1",
        "fec0::1%eth0",  # IPv6 site-local, which Python counts as global
        "192.0.0.1",
        "192.0.0.9",
        "192.0.0.10",
        "192.0.0.255",  # IETF protocol assignments, .9 and .10 included
        "::ffff:192.0.0.9",
    ],
)
def test_site_local_and_protocol_assignment_addresses_are_refused(address):
    assert address_refusal(address) is not None


def test_a_public_address_is_allowed():
    assert address_refusal("93.184.215.14") is None
    assert address_refusal("2606:2800:21f:cb07:6820:80da:af6b:8b2c") is None


def test_loopback_is_allowed_when_listed(settings):
    settings.NOTIFY_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert address_refusal("127.0.0.1") is None


@pytest.mark.parametrize(
    "url", ["https://a.example:99999/n", "https://a.example:65536/", "https://a.example:0/"]
)
def test_a_port_out_of_range_is_a_refusal_not_an_exception(url):
    assert "port" in url_refusal(url)


def test_an_order_with_a_port_out_of_range_is_a_400_not_a_500(api, payer):
    body = {
        "merchant_order_no": "P-1",
        "amount": 5,
        "currency": "CNY",
        "subject": "t",
        "payer_id": payer.pk,
        "notify_url": "https://a.example:99999/",
    }

    response = api.post("/api/v1/orders", body, format="json")

    assert response.status_code == 400
    assert "notify_url" in response.json()["error"]["fields"]


def test_a_refused_name_never_says_what_it_resolves_to(api, payer, monkeypatch):
    """Naming the address would let any merchant map the platform's internal DNS with 400s."""
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port)),
        ],
    )
    body = {
        "merchant_order_no": "P-2",
        "amount": 5,
        "currency": "CNY",
        "subject": "t",
        "payer_id": payer.pk,
        "notify_url": "https://vault.corp.internal/notify",
    }

    response = api.post("/api/v1/orders", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["notify_url"] == (
        "vault.corp.internal is not a public address (allow its network with NOTIFY_ALLOWED_NETWORKS)"
    )
    assert (
        "10.20.30.40" not in response.content.decode()
        and "93.184.215.14" not in response.content.decode()
    )


def test_an_address_the_caller_wrote_is_named_with_its_kind():
    assert (
        url_refusal("http://10.1.2.3/n")
        == "10.1.2.3 is a private address (allow it with NOTIFY_ALLOWED_NETWORKS)"
    )
