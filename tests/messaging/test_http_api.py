"""The two-phase message API over HTTP: prepare, confirm, discard, query; service-token auth."""

import json
import socket
import uuid

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from paysys.contracts import BankPaymentSucceeded
from paysys.messaging import kicks, registry
from paysys.messaging.api import MAX_PAYLOAD_DEPTH
from paysys.messaging.models import Message
from tests.messaging.helpers import force_status

pytestmark = [pytest.mark.django_db(databases="__all__")]

TOKEN = "test-service-token-0123456789-abcdef"


@registry.consumer("test.http_api", queue="accounting", name="accounting.test_http_api")
def on_http_message(message):
    pass


@registry.consumer("test.http_api", queue="notifications", name="notifications.test_http_api")
def on_http_message_too(message):
    pass


@pytest.fixture(autouse=True)
def _token(settings, monkeypatch):
    settings.MESSAGING_SERVICE_TOKEN = TOKEN
    settings.MESSAGING_HTTP_TOPICS = ["test.http_api", "nobody.listens"]
    monkeypatch.setattr(kicks, "kick_relay", lambda alias: None)


@pytest.fixture(autouse=True)
def _producer_resolves(producer_dns):
    pass


@pytest.fixture
def client() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def body(**overrides):
    data = {
        "topic": "test.http_api",
        "payload": {
            "voucher": "V-1",
            "amount": 1234,
            "lines": [{"account": "1002", "debit": 1234}],
        },
        "business_key": "txn-42",
        "check_back_url": "https://producer.example/check-back",
    }
    data.update(overrides)
    return data


def prepare(client, **overrides) -> str:
    response = client.post("/api/v1/messages", body(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.json()["message_id"]


def rows(message_id) -> list[Message]:
    return list(Message.objects.using("default").filter(message_id=message_id).order_by("consumer"))


# --- prepare ------------------------------------------------------------------------------


def test_prepare_stores_a_prepared_row_per_consumer(client):
    response = client.post("/api/v1/messages", body(), format="json")

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "PREPARED"
    stored = rows(data["message_id"])
    assert [(m.consumer, m.queue) for m in stored] == [
        ("accounting.test_http_api", "accounting"),
        ("notifications.test_http_api", "notifications"),
    ]
    assert {m.status for m in stored} == {Message.Status.PREPARED}
    assert stored[0].payload == body()["payload"]
    assert stored[0].business_key == "txn-42"
    assert stored[0].check_back == "https://producer.example/check-back"
    assert stored[0].next_send_at is not None  # the check-back is scheduled


def test_unknown_topic_is_400_and_writes_nothing(client):
    response = client.post("/api/v1/messages", body(topic="nobody.listens"), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_topic"
    assert "topic" in response.json()["error"]["fields"]
    assert not Message.objects.using("default").exists()


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"payload": [1, 2]}, "payload"),
        ({"payload": "text"}, "payload"),
        ({"payload": None}, "payload"),
        ({"payload": {"a": "\ud800"}}, "payload"),
        ({"business_key": ""}, "business_key"),
        ({"business_key": "   "}, "business_key"),
        ({"business_key": "k" * 129}, "business_key"),
        ({"business_key": 42}, "business_key"),
        ({"check_back_url": "ftp://producer.example/x"}, "check_back_url"),
        ({"check_back_url": "not a url"}, "check_back_url"),
        ({"topic": ""}, "topic"),
        ({"topic": "t" * 101}, "topic"),
    ],
)
def test_bad_body_is_400_and_writes_nothing(client, overrides, field):
    # json.dumps escapes a lone surrogate as \\ud800, as a real client would send it
    response = client.post(
        "/api/v1/messages", json.dumps(body(**overrides)), content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert field in response.json()["error"]["fields"]
    assert not Message.objects.using("default").exists()


@pytest.mark.parametrize("missing", ["topic", "payload", "business_key", "check_back_url"])
def test_missing_field_is_400(client, missing):
    data = body()
    del data[missing]

    response = client.post("/api/v1/messages", data, format="json")

    assert response.status_code == 400
    assert missing in response.json()["error"]["fields"]
    assert not Message.objects.using("default").exists()


def test_malformed_and_absurdly_nested_json_are_400(client):
    broken = client.post("/api/v1/messages", "{not json", content_type="application/json")
    nested = client.post(
        "/api/v1/messages", "[" * 20000 + "]" * 20000, content_type="application/json"
    )
    too_deep = client.post(
        "/api/v1/messages", body(payload=_nest(MAX_PAYLOAD_DEPTH + 1)), format="json"
    )

    assert (broken.status_code, nested.status_code, too_deep.status_code) == (400, 400, 400)
    assert "error" in nested.json()
    assert not Message.objects.using("default").exists()


def test_payload_nested_to_the_limit_is_stored(client):
    message_id = prepare(client, payload=_nest(MAX_PAYLOAD_DEPTH))

    assert rows(message_id)[0].payload == _nest(MAX_PAYLOAD_DEPTH)


def _nest(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


# --- confirm, discard, query --------------------------------------------------------------


def test_confirm_makes_the_message_sending_and_due(client):
    message_id = prepare(client)

    response = client.post(f"/api/v1/messages/{message_id}/confirm")

    assert response.status_code == 200, response.content
    assert response.json() == {"message_id": message_id, "status": "SENDING"}
    assert {m.status for m in rows(message_id)} == {Message.Status.SENDING}
    assert all(m.confirmed_at is not None for m in rows(message_id))


def test_confirm_twice_is_idempotent(client):
    message_id = prepare(client)
    first = client.post(f"/api/v1/messages/{message_id}/confirm")
    confirmed_at = [m.confirmed_at for m in rows(message_id)]

    again = client.post(f"/api/v1/messages/{message_id}/confirm")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert [m.confirmed_at for m in rows(message_id)] == confirmed_at
    assert len(rows(message_id)) == 2


def test_confirm_kicks_the_relay_after_commit(
    client, monkeypatch, django_capture_on_commit_callbacks
):
    kicked = []
    monkeypatch.setattr(kicks, "kick_relay", kicked.append)
    message_id = prepare(client)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/api/v1/messages/{message_id}/confirm")

    assert kicks.flush_relay_requests()
    assert kicked == ["default"]


def test_discard_drops_the_prepared_message(client):
    message_id = prepare(client)

    response = client.post(f"/api/v1/messages/{message_id}/discard")

    assert response.status_code == 200, response.content
    assert response.json() == {"message_id": message_id, "status": "DISCARDED"}
    assert rows(message_id) == []
    assert (
        client.post(f"/api/v1/messages/{message_id}/discard").status_code == 404
    )  # a retry: already gone


def test_discard_after_confirm_is_409_and_keeps_the_message(client):
    message_id = prepare(client)
    client.post(f"/api/v1/messages/{message_id}/confirm")

    response = client.post(f"/api/v1/messages/{message_id}/discard")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_prepared"
    assert {m.status for m in rows(message_id)} == {Message.Status.SENDING}


def test_get_shows_each_consumers_row(client):
    message_id = prepare(client)
    client.post(f"/api/v1/messages/{message_id}/confirm")
    force_status(
        Message.objects.using("default").filter(message_id=message_id, queue="accounting"),
        Message.Status.CONSUMED,
        send_count=1,
    )

    response = client.get(f"/api/v1/messages/{message_id}")

    assert response.status_code == 200, response.content
    data = response.json()
    assert data["message_id"] == message_id
    assert data["topic"] == "test.http_api"
    assert data["business_key"] == "txn-42"
    assert data["status"] == "SENDING"  # the least advanced delivery
    assert data["confirmed_at"] is not None
    assert sorted((d["queue"], d["status"], d["send_count"]) for d in data["deliveries"]) == [
        ("accounting", "CONSUMED", 1),
        ("notifications", "SENDING", 0),
    ]


def test_get_rejects_unknown_query_parameters(client):
    message_id = prepare(client)

    response = client.get(f"/api/v1/messages/{message_id}", {"verbose": "1"})

    assert response.status_code == 400
    assert "verbose" in response.json()["error"]["fields"]


def test_get_of_a_fully_consumed_message_is_consumed(client):
    message_id = prepare(client)
    client.post(f"/api/v1/messages/{message_id}/confirm")
    force_status(
        Message.objects.using("default").filter(message_id=message_id), Message.Status.CONSUMED
    )

    assert client.get(f"/api/v1/messages/{message_id}").json()["status"] == "CONSUMED"


@pytest.mark.parametrize(
    "method, suffix", [("get", ""), ("post", "/confirm"), ("post", "/discard")]
)
def test_unknown_message_is_404(client, method, suffix):
    response = getattr(client, method)(f"/api/v1/messages/{uuid.uuid4()}{suffix}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_non_uuid_id_is_404(client):
    response = client.get("/api/v1/messages/not-a-uuid")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Token {TOKEN}",
        "Bearer ",
        f"bearer {TOKEN}",
        "Bearer ünïcode",
    ],
)
def test_missing_or_wrong_token_is_401_and_writes_nothing(header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)

    response = client.post("/api/v1/messages", body(), format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not Message.objects.using("default").exists()


def test_a_merchant_api_key_is_not_a_service_token(api):
    assert api.post("/api/v1/messages", body(), format="json").status_code == 401


@pytest.mark.parametrize(
    "method, suffix", [("get", ""), ("post", "/confirm"), ("post", "/discard")]
)
def test_every_operation_needs_the_token(client, method, suffix):
    message_id = prepare(client)
    anonymous = APIClient()

    response = getattr(anonymous, method)(f"/api/v1/messages/{message_id}{suffix}")

    assert response.status_code == 401
    assert {m.status for m in rows(message_id)} == {Message.Status.PREPARED}


def test_an_empty_configured_token_turns_the_api_off_404_and_out_of_the_schema(settings, tmp_path):
    settings.MESSAGING_SERVICE_TOKEN = ""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer ")

    anonymous = APIClient().post("/api/v1/messages", body(), format="json")
    empty_bearer = client.post("/api/v1/messages", body(), format="json")
    detail = client.get(f"/api/v1/messages/{uuid.uuid4()}")

    # 503 would say "try again later"; a feature that is off is simply not there
    assert (anonymous.status_code, empty_bearer.status_code, detail.status_code) == (404, 404, 404)
    assert anonymous.json()["error"]["code"] == "not_found"
    assert not Message.objects.using("default").exists()
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/messages" not in out.read_text() and "serviceToken" not in out.read_text()


# --- issue 6: input that used to be a 500 or silently accepted ------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"topic": "test.http_api", "payload": {"a": 1e999}, "business_key": "k", "check_back_url": "https://p.example/cb"}',
        b'{"topic": "test.http_api", "payload": {"a": -1e400}, "business_key": "k", "check_back_url": "https://p.example/cb"}',
        b'{"topic": "test.http_api", "payload": {"a": NaN}, "business_key": "k", "check_back_url": "https://p.example/cb"}',
        b'{"topic": "test.http_api", "payload": {"a": [Infinity]}, "business_key": "k", "check_back_url": "https://p.example/cb"}',
        b"[" * 30000 + b"]" * 30000,
        b'{"payload": ' + b"[" * 30000 + b"]" * 30000 + b"}",
    ],
)
def test_infinities_nan_and_deep_nesting_are_400_and_nothing_is_stored(client, raw):
    response = client.generic("POST", "/api/v1/messages", raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "parse_error"
    assert not Message.objects.using("default").exists()


def test_an_unknown_body_field_is_a_400_naming_it(client):
    response = client.post("/api/v1/messages", body(status="SENDING", send_count=0), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "send_count": "unknown field",
        "status": "unknown field",
    }
    assert not Message.objects.using("default").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/cb",
        "http://[::ffff:169.254.169.254]/cb",
    ],
)
def test_a_check_back_url_into_the_platforms_network_is_refused_at_prepare(client, url, settings):
    settings.NOTIFY_ALLOWED_NETWORKS = []

    response = client.post("/api/v1/messages", body(check_back_url=url), format="json")

    assert response.status_code == 400
    assert "check_back_url" in response.json()["error"]["fields"]
    assert not Message.objects.using("default").exists()


def test_a_check_back_name_that_does_not_resolve_is_refused_at_prepare(client):
    """A name that resolves only later, once accepted, is a DNS rebinding set-up: refused now."""
    response = client.post(
        "/api/v1/messages",
        body(check_back_url="https://no-such-producer.invalid/cb"),
        format="json",
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert "does not resolve" in error["fields"]["check_back_url"]
    assert not Message.objects.using("default").exists()


def test_a_check_back_name_resolving_into_the_platforms_network_is_refused_without_naming_the_address(
    client, settings, monkeypatch
):
    settings.NOTIFY_ALLOWED_NETWORKS = []
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port)),
        ],
    )

    response = client.post(
        "/api/v1/messages", body(check_back_url="https://db.internal/cb"), format="json"
    )

    assert response.status_code == 400
    assert "db.internal is not a public address" in response.json()["error"]["message"]
    assert "10.20.30.40" not in response.content.decode()  # the caller learns nothing of our DNS
    assert not Message.objects.using("default").exists()


def test_the_schema_documents_the_api_and_stays_valid(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    schema = out.read_text()
    assert "/api/v1/messages/{message_id}/confirm" in schema
    assert "serviceToken" in schema


def test_a_topic_not_open_to_http_producers_is_refused_and_nothing_is_stored(client):
    # bank.payment_succeeded has consumers, but only the gateway may announce a bank payment
    response = client.post(
        "/api/v1/messages",
        {
            "topic": BankPaymentSucceeded.TOPIC,
            "payload": {"out_trade_no": "PSX"},
            "business_key": "k",
            "check_back_url": "http://127.0.0.1:9/cb",
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "topic_not_allowed"
    assert not Message.objects.using("default").exists()
