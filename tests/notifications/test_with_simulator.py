"""paysys' notifications meet the sandbox merchant simulator over real HTTP: what the delivery
engine sends, the simulator's standardwebhooks verifier accepts, before, during and after a secret
rotation; a resend carries the same webhook-id and is processed once; the simulator's failures
drive the schedule and 410 disables the endpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from notifications.delivery import deliver_due
from notifications.models import Notification
from paysys.core.models import Merchant
from paysys.core.services import merchant_rotate_webhook_secret
from tests.notifications.factories import make_notification
from tests.notifications.helpers import deliver_due_at

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


class Simulator:
    """The merchant's server, reached over HTTP like paysys reaches it."""

    def __init__(self, base: str, merchant_id: int):
        self.url = f"{base}/sandbox/merchant/{merchant_id}"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {settings.SANDBOX_TOKEN}"  # controls need it

    def set(self, **options) -> None:
        response = self.http.post(self.url, json=options, timeout=5)
        assert response.status_code == 200, response.text

    def received(self) -> list[dict]:
        return list(
            reversed(self.http.get(f"{self.url}/received", timeout=5).json()["results"])
        )  # oldest first


@pytest.fixture
def shop(merchant_and_key, live_server):
    merchant, api_key = merchant_and_key
    simulator = Simulator(live_server.url, merchant.pk)
    simulator.set(
        webhook_secret=merchant.webhook_secret
    )  # the merchant keeps the secret it was given
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return merchant, simulator, client


def notify(merchant, simulator) -> Notification:
    return make_notification(merchant, notify_url=f"{simulator.url}/notify")


def test_a_notification_is_verified_by_the_merchant_and_a_resend_is_the_same_webhook_id(shop):
    merchant, simulator, api = shop
    record = notify(merchant, simulator)

    deliver_due()
    resend = api.post(f"/api/v1/notifications/{record.webhook_id}/resend")
    deliver_due()

    assert resend.status_code == 202
    first, again = simulator.received()
    assert (
        first["verified"]
        and again["verified"]
        and first["status_code"] == again["status_code"] == 200
    )
    assert first["webhook_id"] == again["webhook_id"] == record.webhook_id
    assert (first["duplicate"], again["duplicate"]) == (
        False,
        True,
    )  # the merchant processed it once
    detail = api.get(f"/api/v1/notifications/{record.webhook_id}").json()
    assert detail["status"] == "SUCCEEDED"
    assert [(a["number"], a["trigger"], a["outcome"]) for a in detail["attempts"]] == [
        (1, "schedule", "succeeded"),
        (2, "resend", "succeeded"),
    ]


def test_rotation_the_merchant_verifies_with_the_old_secret_then_the_new_and_the_old_stops_after_grace(
    shop,
):
    merchant, simulator, _ = shop

    merchant_rotate_webhook_secret(merchant_id=merchant.pk)  # the merchant has not switched yet
    notify(merchant, simulator)
    deliver_due()
    new_secret = Merchant.objects.get(pk=merchant.pk).webhook_secret
    simulator.set(webhook_secret=new_secret)  # the merchant deploys the new secret
    notify(merchant, simulator)
    deliver_due()
    simulator.set(webhook_secret=merchant.webhook_secret)  # a merchant who never switched ...
    Merchant.objects.filter(pk=merchant.pk).update(
        previous_webhook_secret_until=timezone.now()
    )  # ... after the grace
    late = notify(merchant, simulator)
    deliver_due()

    verdicts = [(d["verified"], d["status_code"]) for d in simulator.received()]
    assert verdicts == [(True, 200), (True, 200), (False, 400)]
    assert "No matching signature found" in simulator.received()[2]["error"]
    late.refresh_from_db()
    assert late.status == "PENDING" and late.last_status_code == 400  # retried on schedule


def test_the_merchants_failures_are_retried_and_410_disables_the_endpoint(shop):
    merchant, simulator, _ = shop
    simulator.set(fail_next=1, fail_status=503, retry_after=30)
    record = notify(merchant, simulator)

    deliver_due()
    record.refresh_from_db()
    assert record.status == "PENDING" and record.last_status_code == 503
    deliver_due_at(record.next_attempt_at + timedelta(seconds=1))
    record.refresh_from_db()
    assert record.status == "SUCCEEDED"

    simulator.set(gone=True)
    gone = notify(merchant, simulator)
    deliver_due()
    gone.refresh_from_db()
    assert gone.status == "FAILED" and gone.endpoint.is_disabled
    assert [d["behaviour"] for d in simulator.received()] == ["fail", "", "gone"]
