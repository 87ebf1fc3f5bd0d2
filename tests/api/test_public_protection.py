"""Public endpoints (issue 6): a Content-Security-Policy on every page, Swagger UI from this
origin, and per-address request limits on the gateway, the sandbox and admin log-in."""

import itertools
import re
import secrets

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from paysys.core.netguard import client_network
from tests.api.helpers import fresh_window

pytestmark = pytest.mark.django_db(databases="__all__")

_hosts = itertools.count(1)
_run = secrets.randbelow(2**16)  # another run within the same rate window must not share addresses


def new_address() -> str:
    """A client address no test used in this rate window (the counters live in a shared cache
    that outlives a test run)."""
    n = next(_hosts)
    return f"2001:db8:{_run:x}:{n:x}::1"  # a /64 of its own: an IPv6 client counts as its /64


def test_docs_are_served_from_this_origin_under_a_strict_csp(client):
    page = client.get("/api/docs/")
    script = client.get("/api/docs/?script=")

    assert page.status_code == 200 and script.status_code == 200
    csp = page["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "default-src 'self'" in csp
        and "frame-ancestors 'none'" in csp
    )
    html = page.content.decode()
    assert "cdn.jsdelivr" not in html and "@latest" not in html
    assert "<script>" not in html  # no inline script: the start-up script is a file (?script=)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(url.startswith("/") for url in assets), assets
    for url in assets:
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), (
                url
            )  # shipped by drf-spectacular-sidecar


@pytest.mark.parametrize("path", ["/admin/login/", "/healthz", "/api/v1/orders"])
def test_every_response_carries_the_csp(client, path):
    assert "default-src 'self'" in client.get(path)["Content-Security-Policy"]


def bank_notify(client):
    return client.post("/gateway/bank/notify", b"{}", content_type="application/json")


@pytest.mark.parametrize(
    "scope, call",
    [
        ("gateway", bank_notify),
        ("sandbox", lambda client: client.get("/sandbox/bank/payments/PSNONE")),
        (
            "admin_login",
            lambda client: client.post("/admin/login/", {"username": "admin", "password": "guess"}),
        ),
    ],
)
def test_public_endpoints_are_limited_per_client_address(settings, scope, call):
    settings.PUBLIC_RATE_LIMITS = {**settings.PUBLIC_RATE_LIMITS, scope: "2/min"}
    fresh_window(60, needed=5)
    attacker = Client(REMOTE_ADDR=new_address())
    other = Client(REMOTE_ADDR=new_address())

    first, second, third = (call(attacker).status_code for _ in range(3))
    # a forged X-Forwarded-For is not another client: no proxy is trusted unless NUM_PROXIES says so
    spoofed = Client(
        REMOTE_ADDR=attacker.defaults["REMOTE_ADDR"], HTTP_X_FORWARDED_FOR=new_address()
    )

    assert 429 not in (first, second)
    assert third == 429
    assert call(spoofed).status_code == 429
    assert call(other).status_code != 429
    response = call(attacker)
    assert response.json()["error"]["code"] == "throttled" and int(response["Retry-After"]) >= 1


def test_an_ipv6_client_counts_as_its_64_not_as_each_of_its_addresses(settings):
    settings.PUBLIC_RATE_LIMITS = {**settings.PUBLIC_RATE_LIMITS, "admin_login": "2/min"}
    fresh_window(60, needed=5)
    network = new_address().removesuffix("::1")
    # guesses from one /64, each from another of its 2**64 addresses
    guesses = [
        Client(REMOTE_ADDR=f"{network}:{n:x}:0:0:{n:x}").post(
            "/admin/login/", {"username": "admin", "password": f"guess{n}"}
        )
        for n in range(1, 4)
    ]
    neighbour = Client(REMOTE_ADDR=new_address())  # the next /64

    assert [g.status_code == 429 for g in guesses] == [False, False, True]
    assert (
        neighbour.post("/admin/login/", {"username": "admin", "password": "x"}).status_code != 429
    )
    assert client_network("198.51.100.7") == "198.51.100.7"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.7"


def test_behind_trusted_proxies_the_forwarded_address_is_the_client(settings):
    from rest_framework.settings import api_settings

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    api_settings.reload()
    settings.PUBLIC_RATE_LIMITS = {**settings.PUBLIC_RATE_LIMITS, "gateway": "1/min"}
    fresh_window(60, needed=5)
    try:
        proxy = new_address()
        one = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=new_address())
        two = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=new_address())
        assert [bank_notify(one).status_code, bank_notify(one).status_code] == [401, 429]
        assert bank_notify(two).status_code == 401
    finally:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
        api_settings.reload()


def test_admin_login_page_views_are_not_limited(settings):
    settings.PUBLIC_RATE_LIMITS = {**settings.PUBLIC_RATE_LIMITS, "admin_login": "1/min"}
    client = Client(REMOTE_ADDR=new_address())

    assert [client.get("/admin/login/").status_code for _ in range(3)] == [200, 200, 200]


def test_a_foreign_host_header_is_a_400_without_an_error_traceback_in_the_log(client, caplog):
    response = client.get("/healthz", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert not [r for r in caplog.records if r.name.startswith("django.security")]


def test_answers_to_requests_with_credentials_are_never_cached(api, client):
    # a merchant's balance and orders: no-store (a browser or proxy would keep them otherwise)
    for path in ("/api/v1/balance", "/api/v1/orders", "/api/v1/orders/nowhere"):
        assert api.get(path)["Cache-Control"] == "no-store", path
    # a wrong key's 401 carries credentials too; public pages keep their own caching
    wrong = Client(HTTP_AUTHORIZATION="Bearer psk_nope")
    assert wrong.get("/api/v1/balance")["Cache-Control"] == "no-store"
    assert "Cache-Control" not in client.get("/healthz")


def test_the_site_root_leads_to_the_api_docs(client):
    answer = client.get("/")
    assert answer.status_code == 302 and answer["Location"] == "/api/docs/"


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE"])
@pytest.mark.parametrize(
    "path", ["/", "/api/docs/", "/api/docs/?script=", "/api/schema/", "/healthz", "/metrics"]
)
def test_no_method_on_a_public_page_is_a_5xx(client, method, path):
    """OPTIONS /api/docs/ was a 500 with a traceback in the log: DRF's OPTIONS answer had no
    template to render on the HTML page."""
    answer = client.generic(method, path)

    assert answer.status_code < 500, (method, path, answer.status_code)
