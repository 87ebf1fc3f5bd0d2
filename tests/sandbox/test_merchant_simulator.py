"""The merchant simulator: an outside merchant's server that verifies paysys' notifications with
the standardwebhooks library, processes each webhook-id once, and misbehaves on request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.conf import settings
from django.test import Client

from paysys.core.services import generate_webhook_secret
from paysys.sandbox.merchant import services, views
from paysys.sandbox.merchant.models import MerchantDelivery, MerchantEndpoint, MerchantNotification
from tests.concurrency import run_at_once

pytestmark = pytest.mark.django_db(databases="__all__")

PAYLOAD = {
    "type": "order.paid",
    "timestamp": "2026-11-27T10:00:00+00:00",
    "data": {"merchant_order_no": "A-1", "out_trade_no": "P123", "amount": 1999, "currency": "CNY"},
}


def signed(
    secrets: str | list[str], payload=PAYLOAD, msg_id: str = "msg_1", at: datetime | None = None
) -> tuple[str, dict]:
    """(body, headers) as a Standard Webhooks sender signs them, one signature per secret."""
    secrets = [secrets] if isinstance(secrets, str) else secrets
    at = at or datetime.now(tz=UTC)
    body = json.dumps(payload)
    signature = " ".join(services.Webhook(secret).sign(msg_id, at, body) for secret in secrets)
    return body, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def post(path: str, body: str | bytes, headers: dict):
    return Client().post(path, body, content_type="application/json", headers=headers)


def controller() -> Client:
    """A client holding the sandbox's control token, as the demo and the tests do."""
    return Client(headers={"Authorization": f"Bearer {settings.SANDBOX_TOKEN}"})


def control(merchant_id: int, **options):
    return controller().post(
        f"/sandbox/merchant/{merchant_id}", json.dumps(options), content_type="application/json"
    )


@pytest.fixture
def secret() -> str:
    return generate_webhook_secret()


@pytest.fixture
def shop(secret) -> int:
    """Merchant 41 set up in the simulator with its secret, as a merchant does once."""
    assert control(41, webhook_secret=secret).status_code == 200
    return 41


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The waits of the hang and slow behaviours, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(views.time, "sleep", waits.append)
    return waits


# --- set-up --------------------------------------------------------------------------------


def test_set_up_needs_the_secret_and_valid_options():
    missing = control(7)
    bad = control(7, webhook_secret="nope", fail_next=-1, fail_status=200, gone="yes", colour="red")

    assert missing.status_code == 400 and set(missing.json()["error"]["fields"]) == {
        "webhook_secret"
    }
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {
        "webhook_secret",
        "fail_next",
        "fail_status",
        "gone",
        "colour",
    }
    assert (
        controller()
        .post("/sandbox/merchant/7", b"{nope", content_type="application/json")
        .status_code
        == 400
    )
    assert MerchantEndpoint.objects.count() == 0


def test_options_change_only_what_is_given_and_the_secret_is_never_shown(shop, secret):
    response = control(shop, fail_next=3, retry_after=7)
    control(shop, delay_ms=100)

    state = controller().get(f"/sandbox/merchant/{shop}").json()
    assert (
        state["fail_next"] == 3
        and state["retry_after"] == 7
        and state["delay_ms"] == 100
        and not state["gone"]
    )
    assert secret not in response.content.decode() and "webhook_secret" not in state
    assert controller().get("/sandbox/merchant/999").status_code == 404


# --- verification ----------------------------------------------------------------------------


def test_a_good_notification_is_verified_processed_and_recorded(shop, secret):
    body, headers = signed(secret)

    response = post(f"/sandbox/merchant/{shop}/notify", body, headers)

    assert response.status_code == 200 and response.json() == {"received": True, "duplicate": False}
    notification = MerchantNotification.objects.get()
    assert (notification.webhook_id, notification.type, notification.out_trade_no) == (
        "msg_1",
        "order.paid",
        "P123",
    )
    assert notification.payload == PAYLOAD
    received = controller().get(f"/sandbox/merchant/{shop}/received").json()["results"]
    assert len(received) == 1
    assert (
        received[0]["verified"] and received[0]["status_code"] == 200 and received[0]["error"] == ""
    )
    assert received[0]["headers"]["webhook-id"] == "msg_1" and received[0]["body"] == body
    assert received[0]["payload"] == PAYLOAD


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda body, headers: (body.replace("1999", "1"), headers), "No matching signature found"),
        (
            lambda body, headers: (body, {**headers, "webhook-id": "msg_2"}),
            "No matching signature found",
        ),
        (
            lambda body, headers: (
                body,
                {k: v for k, v in headers.items() if k != "webhook-signature"},
            ),
            "Missing required headers",
        ),
        (
            lambda body, headers: (body, {**headers, "webhook-signature": "v1abc"}),
            "malformed signature header",
        ),
        (
            lambda body, headers: (body, {**headers, "webhook-timestamp": "soon"}),
            "Invalid Signature Headers",
        ),
    ],
    ids=["amount changed", "other webhook-id", "unsigned", "malformed signature", "bad timestamp"],
)
def test_what_the_verifier_rejects_is_answered_400_recorded_with_why_and_not_processed(
    shop, secret, tamper, reason
):
    body, headers = tamper(*signed(secret))

    response = post(f"/sandbox/merchant/{shop}/notify", body, headers)

    assert response.status_code == 400 and reason in response.json()["error"]["message"]
    delivery = MerchantDelivery.objects.get()
    assert not delivery.verified and reason in delivery.error and delivery.status_code == 400
    assert MerchantNotification.objects.count() == 0


def test_an_old_timestamp_is_rejected(shop, secret):
    body, headers = signed(secret, at=datetime.now(tz=UTC) - timedelta(minutes=6))

    response = post(f"/sandbox/merchant/{shop}/notify", body, headers)

    assert response.status_code == 400 and "too old" in MerchantDelivery.objects.get().error


def test_another_merchants_secret_does_not_verify(shop):
    body, headers = signed(generate_webhook_secret())

    assert post(f"/sandbox/merchant/{shop}/notify", body, headers).status_code == 400


def test_a_body_that_is_not_utf8_is_rejected_not_a_500(shop, secret):
    _, headers = signed(secret)

    response = post(f"/sandbox/merchant/{shop}/notify", b"\xff\xfe{}", headers)

    assert (
        response.status_code == 400
        and MerchantDelivery.objects.get().error == "the body is not UTF-8"
    )


def test_a_merchant_not_set_up_is_404_and_still_recorded(secret):
    body, headers = signed(secret)

    assert post("/sandbox/merchant/5/notify", body, headers).status_code == 404
    assert MerchantDelivery.objects.get().endpoint is None


def test_during_a_rotation_either_secret_held_by_the_merchant_verifies(shop, secret):
    new = generate_webhook_secret()
    body, headers = signed(
        [new, secret], msg_id="msg_a"
    )  # paysys signs with both during the grace period
    assert post(f"/sandbox/merchant/{shop}/notify", body, headers).status_code == 200

    control(shop, webhook_secret=new)  # the merchant deploys the new secret
    body, headers = signed([new, secret], msg_id="msg_b")
    assert post(f"/sandbox/merchant/{shop}/notify", body, headers).status_code == 200
    body, headers = signed(
        secret, msg_id="msg_c"
    )  # the grace period is over: only the old one would fail
    assert post(f"/sandbox/merchant/{shop}/notify", body, headers).status_code == 400


# --- the plain path ------------------------------------------------------------------------------


def test_the_plain_path_finds_the_merchant_whose_secret_verifies(shop):
    other_secret = generate_webhook_secret()
    control(42, webhook_secret=other_secret)
    body, headers = signed(other_secret)

    assert post("/sandbox/merchant/notify", body, headers).status_code == 200
    assert MerchantNotification.objects.get().endpoint.merchant_id == 42

    body, headers = signed(generate_webhook_secret(), msg_id="msg_x")
    response = post("/sandbox/merchant/notify", body, headers)
    assert (
        response.status_code == 400
        and "no set-up merchant's secret verifies it" in response.json()["error"]["message"]
    )


def test_the_plain_path_sets_the_demo_merchant_up_from_its_configuration_file(settings, tmp_path):
    secret = generate_webhook_secret()
    settings.VAR_DIR = tmp_path
    (tmp_path / services.DEMO_MERCHANT_FILE).write_text(
        json.dumps({"merchant_id": 77, "api_key": "psk_x", "webhook_secret": secret})
    )
    body, headers = signed(secret)

    assert post("/sandbox/merchant/notify", body, headers).status_code == 200
    assert MerchantEndpoint.objects.get().merchant_id == 77


# --- deduplication -----------------------------------------------------------------------------


def test_a_webhook_id_is_processed_once_and_copies_are_counted(shop, secret):
    first = post(f"/sandbox/merchant/{shop}/notify", *signed(secret))
    again = post(
        f"/sandbox/merchant/{shop}/notify", *signed(secret)
    )  # a retry: same id, new timestamp

    assert (
        first.json()["duplicate"] is False
        and again.status_code == 200
        and again.json()["duplicate"] is True
    )
    notification = MerchantNotification.objects.get()
    assert notification.deliveries == 2
    assert [d.duplicate for d in MerchantDelivery.objects.order_by("id")] == [False, True]


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_two_copies_at_once_are_processed_once(shop, secret):
    body, headers = signed(secret)
    receive = lambda: services.notification_receive(  # noqa: E731
        merchant_id=shop, path="/x", headers=headers, body=body.encode()
    ).body["duplicate"]

    duplicates = run_at_once(receive, receive, receive)

    assert sorted(duplicates) == [False, True, True]
    assert MerchantNotification.objects.get().deliveries == 3


# --- misbehaviour ------------------------------------------------------------------------------


def test_fail_the_next_n_then_accept(shop, secret):
    control(shop, fail_next=2, fail_status=503, retry_after=7)

    answers = [post(f"/sandbox/merchant/{shop}/notify", *signed(secret)) for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0]["Retry-After"] == "7" and "Retry-After" not in answers[2]
    assert MerchantNotification.objects.get().deliveries == 1
    assert [d.behaviour for d in MerchantDelivery.objects.order_by("id")] == ["fail", "fail", ""]
    assert controller().get(f"/sandbox/merchant/{shop}").json()["fail_next"] == 0


def test_a_redirect_can_be_the_failure(shop, secret):
    control(shop, fail_next=1, fail_status=302)

    assert post(f"/sandbox/merchant/{shop}/notify", *signed(secret)).status_code == 302


def test_gone_answers_410_until_told_otherwise(shop, secret):
    control(shop, gone=True)
    assert post(f"/sandbox/merchant/{shop}/notify", *signed(secret)).status_code == 410

    control(shop, gone=False)
    assert post(f"/sandbox/merchant/{shop}/notify", *signed(secret)).status_code == 200


def test_slow_answers_well_but_late(shop, secret, slept):
    control(shop, delay_ms=1500)

    response = post(f"/sandbox/merchant/{shop}/notify", *signed(secret))

    assert response.status_code == 200 and slept == [1.5]
    assert MerchantDelivery.objects.get().behaviour == "slow"


def test_hang_holds_the_request_and_processes_nothing(shop, secret, slept):
    control(shop, hang_seconds=30)

    response = post(f"/sandbox/merchant/{shop}/notify", *signed(secret))

    assert response.status_code == 504 and slept == [30]
    assert MerchantNotification.objects.count() == 0
    assert MerchantDelivery.objects.get().behaviour == "hang"


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_a_hanging_merchant_over_real_http_times_the_sender_out(live_server, shop, secret):
    control(shop, hang_seconds=3)
    body, headers = signed(secret)

    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{live_server.url}/sandbox/merchant/{shop}/notify",
            data=body,
            headers=headers,
            timeout=0.5,
        )

    assert MerchantDelivery.objects.get().behaviour == "hang"


# --- the simulator stands outside the platform ---------------------------------------------------


def test_nothing_in_the_platform_imports_the_simulator():

    from django.conf import settings

    offenders = []
    platform = [
        settings.BASE_DIR / name
        for name in ("paysys", "orders", "accounts", "accounting", "notifications")
    ]
    for path in (p for top in platform for p in top.glob("**/*.py")):
        relative = path.relative_to(settings.BASE_DIR).as_posix()
        if relative.startswith("paysys/sandbox/") or relative == "paysys/urls.py":
            continue
        if "paysys.sandbox.merchant" in path.read_text(errors="replace"):
            offenders.append(relative)
    assert offenders == []


def test_every_merchant_control_goes_through_the_one_gate_and_receivers_do_not():
    from django.urls import resolve

    controls = ["/sandbox/merchant/1", "/sandbox/merchant/1/received"]
    receivers = ["/sandbox/merchant/notify", "/sandbox/merchant/1/notify"]

    assert all(getattr(resolve(path).func, "sandbox_control", False) for path in controls)
    assert not any(getattr(resolve(path).func, "sandbox_control", False) for path in receivers)


# --- admin -----------------------------------------------------------------------------------


def test_admin_shows_what_the_merchant_received_and_never_the_secret(admin_client, shop, secret):
    post(f"/sandbox/merchant/{shop}/notify", *signed(secret))
    body, headers = signed(secret, msg_id="msg_bad")
    post(f"/sandbox/merchant/{shop}/notify", body.replace("1999", "1"), headers)
    delivery = MerchantDelivery.objects.get(webhook_id="msg_bad")

    deliveries = admin_client.get("/admin/sandbox/merchantdelivery/").content.decode()
    unverified = admin_client.get(
        "/admin/sandbox/merchantdelivery/", {"verified__exact": "0"}
    ).content.decode()
    detail = admin_client.get(
        f"/admin/sandbox/merchantdelivery/{delivery.pk}/change/"
    ).content.decode()
    received = admin_client.get("/admin/sandbox/merchantnotification/").content.decode()
    endpoint = admin_client.get(
        f"/admin/sandbox/merchantendpoint/{MerchantEndpoint.objects.get().pk}/change/"
    ).content.decode()

    assert "msg_1" in deliveries and "msg_bad" in deliveries and "msg_1" not in unverified
    assert "No matching signature found" in detail and "webhook-signature" in detail
    assert "P123" in received
    assert (
        secret not in endpoint and 'name="fail_next"' in endpoint
    )  # switches editable, secret hidden
    assert admin_client.get("/admin/sandbox/merchantdelivery/add/").status_code == 403


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_two_first_set_ups_at_once_make_one_endpoint(secret):
    def set_up():
        return services.endpoint_configure(
            merchant_id=9, data={"webhook_secret": secret}
        ).merchant_id

    assert run_at_once(set_up, set_up, set_up) == [9, 9, 9]
    assert MerchantEndpoint.objects.count() == 1
