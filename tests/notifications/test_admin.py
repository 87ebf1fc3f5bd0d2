"""The notifications admin: records with attempts, filters, resend, recover since, endpoint
enable/disable, per-merchant success over 24 h; rows are read-only, actions call the services."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from notifications import services
from notifications.models import Endpoint, Notification
from tests.notifications.factories import make_attempt, make_notification
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__")

NOTIFICATIONS = "/admin/notifications/notification/"
ENDPOINTS = "/admin/notifications/endpoint/"
RECOVER = NOTIFICATIONS + "recover/"


@pytest.fixture(autouse=True)
def kicks(monkeypatch):
    calls = []
    monkeypatch.setattr(services, "request_delivery", lambda: calls.append(1))
    return calls


@pytest.fixture
def viewer(client, django_user_model):
    """Staff who may look but not act (view permissions only)."""
    user = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_notification", "view_endpoint"])
    )
    client.force_login(user)
    return client


def listed(response) -> str:
    return response.content.decode()


# --- records -------------------------------------------------------------------------------


def test_a_record_shows_its_attempts_and_body(admin_client, merchant):
    record = make_notification(merchant, status="FAILED")
    make_attempt(record, status_code=503, response_excerpt="busy today")
    make_attempt(record, status_code=None, error_class="timeout", error="no answer in 15 s")

    page = listed(admin_client.get(f"{NOTIFICATIONS}{record.pk}/change/"))

    assert "busy today" in page and "no answer in 15 s" in page and "timeout" in page
    assert record.webhook_id in page and "&quot;out_trade_no&quot;" in page  # the body, pretty
    assert 'name="_save"' not in page  # read-only


def test_rows_cannot_be_added_or_deleted(admin_client, merchant):
    record = make_notification(merchant)

    assert admin_client.get(NOTIFICATIONS + "add/").status_code == 403
    assert (
        admin_client.post(f"{NOTIFICATIONS}{record.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert (
        admin_client.post(f"{ENDPOINTS}{record.endpoint_id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Notification.objects.filter(pk=record.pk).exists()


def test_filters_by_status_merchant_and_failing_endpoint(admin_client, make_merchant):
    shop, _ = make_merchant()
    other, _ = make_merchant()
    failed = make_notification(shop, status="FAILED", notify_url="https://bad.example/n")
    fine = make_notification(shop, status="SUCCEEDED")
    theirs = make_notification(other, status="FAILED")
    Endpoint.objects.filter(pk=failed.endpoint_id).update(consecutive_failures=3)

    by_status = listed(admin_client.get(NOTIFICATIONS, {"status__exact": "FAILED"}))
    by_merchant = listed(admin_client.get(NOTIFICATIONS, {"merchant": shop.pk}))
    by_endpoint = listed(admin_client.get(NOTIFICATIONS, {"endpoint_health": "failing"}))

    assert (
        failed.webhook_id in by_status
        and theirs.webhook_id in by_status
        and fine.webhook_id not in by_status
    )
    assert (
        failed.webhook_id in by_merchant
        and fine.webhook_id in by_merchant
        and theirs.webhook_id not in by_merchant
    )
    assert (
        failed.webhook_id in by_endpoint
        and fine.webhook_id not in by_endpoint
        and theirs.webhook_id not in by_endpoint
    )
    assert (
        admin_client.get(NOTIFICATIONS, {"merchant": "x"}).status_code == 200
    )  # a bad value is no 500
    assert admin_client.get(NOTIFICATIONS, {"q": "msg_nothing"}).status_code == 200


def test_resend_selected_keeps_the_webhook_id_and_skips_disabled_endpoints(
    admin_client, merchant, kicks
):
    failed = make_notification(merchant, status="FAILED")
    blocked = make_notification(merchant, status="FAILED", notify_url="https://gone.example/n")
    services.endpoint_disable(blocked.endpoint, reason="410 Gone")

    response = admin_client.post(
        NOTIFICATIONS,
        {"action": "resend_selected", "_selected_action": [failed.pk, blocked.pk]},
        follow=True,
    )

    page = listed(response)
    assert "1 notification(s) resent" in page and "1 not resent: their endpoint is disabled" in page
    failed.refresh_from_db(), blocked.refresh_from_db()
    assert (
        failed.status == "PENDING"
        and failed.next_attempt_at is not None
        and failed.webhook_id in page
    )
    assert blocked.status == "FAILED"
    assert kicks


def test_recover_page_counts_then_resends_a_merchants_failed_since(admin_client, make_merchant):
    shop, _ = make_merchant()
    other, _ = make_merchant()
    now = timezone.now()
    recent = make_notification(shop, status="FAILED", created_at=now - timedelta(hours=1))
    old = make_notification(shop, status="FAILED", created_at=now - timedelta(days=3))
    theirs = make_notification(other, status="FAILED", created_at=now - timedelta(hours=1))
    since = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")

    preview = admin_client.get(RECOVER, {"merchant": shop.pk, "since": since})

    assert preview.status_code == 200
    assert "1 failed notification(s)" in listed(
        preview
    ) and "Resend these 1 notification(s)" in listed(preview)
    assert Notification.objects.get(pk=recent.pk).status == "FAILED"  # looking changes nothing

    response = admin_client.post(RECOVER, {"merchant": shop.pk, "since": since}, follow=True)

    assert "1 failed notification(s) of merchant" in listed(response)
    statuses = dict(
        Notification.objects.filter(pk__in=[recent.pk, old.pk, theirs.pk]).values_list(
            "pk", "status"
        )
    )
    assert statuses == {recent.pk: "PENDING", old.pk: "FAILED", theirs.pk: "FAILED"}


def test_recover_action_leads_to_the_page_for_the_merchant(admin_client, merchant):
    record = make_notification(merchant, status="FAILED")

    response = admin_client.post(
        NOTIFICATIONS, {"action": "recover_merchants", "_selected_action": [record.pk]}
    )

    assert (
        response.status_code == 302 and response["Location"] == f"{RECOVER}?merchant={merchant.pk}"
    )
    page = listed(admin_client.get(response["Location"]))
    assert f'<option value="{merchant.pk}" selected>' in page


def test_recover_refuses_bad_input_without_changing_anything(admin_client, merchant):
    record = make_notification(merchant, status="FAILED")

    response = admin_client.post(RECOVER, {"merchant": merchant.pk, "since": "last tuesday"})

    assert response.status_code == 200 and "errorlist" in listed(response)
    assert Notification.objects.get(pk=record.pk).status == "FAILED"


def test_a_viewer_sees_but_cannot_act(viewer, merchant):
    record = make_notification(merchant, status="FAILED")

    page = listed(viewer.get(NOTIFICATIONS))
    assert (
        record.webhook_id in page and "resend_selected" not in page and "Recover failed" not in page
    )
    assert viewer.get(RECOVER).status_code == 403
    assert (
        viewer.post(RECOVER, {"merchant": merchant.pk, "since": "2020-01-01T00:00"}).status_code
        == 403
    )
    viewer.post(NOTIFICATIONS, {"action": "resend_selected", "_selected_action": [record.pk]})
    assert Notification.objects.get(pk=record.pk).status == "FAILED"


# --- endpoints -----------------------------------------------------------------------------


def test_endpoint_disable_then_enable_with_recovery(admin_client, merchant):
    record = make_notification(merchant)
    endpoint = record.endpoint

    admin_client.post(ENDPOINTS, {"action": "disable_selected", "_selected_action": [endpoint.pk]})
    endpoint.refresh_from_db()
    assert endpoint.is_disabled and "admin" in endpoint.disabled_reason
    force_status(
        Notification.objects.filter(pk=record.pk),
        status="FAILED",
        next_attempt_at=None,
        updated_at=timezone.now(),
    )

    response = admin_client.post(
        ENDPOINTS, {"action": "enable_selected", "_selected_action": [endpoint.pk]}, follow=True
    )

    endpoint.refresh_from_db()
    assert not endpoint.is_disabled
    assert "1 notification(s) resent" in listed(response)
    assert Notification.objects.get(pk=record.pk).status == "PENDING"


def test_endpoint_filters_and_the_merchants_success_rate_over_24_hours(admin_client, make_merchant):
    shop, _ = make_merchant()
    quiet, _ = make_merchant()
    record = make_notification(shop)
    make_notification(quiet, notify_url="https://quiet.example/n")
    for outcome in ["succeeded", "succeeded", "succeeded", "failed"]:
        make_attempt(record, outcome=outcome, status_code=200 if outcome == "succeeded" else 500)
    make_attempt(
        record, outcome="failed", started_at=timezone.now() - timedelta(hours=25)
    )  # outside the window
    Endpoint.objects.filter(pk=record.endpoint_id).update(consecutive_failures=1)

    page = listed(admin_client.get(ENDPOINTS))
    failing = listed(admin_client.get(ENDPOINTS, {"endpoint_health": "failing"}))
    by_rate = admin_client.get(ENDPOINTS, {"o": "5"})

    assert "75.0 % (3 of 4)" in page and "no attempts" in page
    assert "shop.example" in failing and "quiet.example" not in failing
    assert by_rate.status_code == 200
