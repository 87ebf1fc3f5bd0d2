"""The merchant API of notifications: list (filters, cursor pages), one with its attempts, resend."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from notifications.models import Notification
from notifications.services import endpoint_disable, notification_create_for_order_paid
from orders.creation import order_create
from orders.models import Order
from orders.participants import order_paid_event
from tests.notifications.factories import make_attempt, make_notification
from tests.statuses import force_status

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def other_merchant(make_merchant):
    return make_merchant()[0]


def ids(response) -> list[str]:
    return [item["id"] for item in response.json()["results"]]


# --- list ----------------------------------------------------------------------------------


def test_list_shows_only_the_merchants_own_newest_first(api, merchant, other_merchant):
    now = timezone.now()
    old = make_notification(merchant, created_at=now - timedelta(minutes=2))
    new = make_notification(merchant, created_at=now - timedelta(minutes=1))
    make_notification(other_merchant)

    response = api.get("/api/v1/notifications")

    assert response.status_code == 200
    assert ids(response) == [new.webhook_id, old.webhook_id]
    item = response.json()["results"][0]
    assert item["type"] == "order.paid" and item["status"] == "PENDING"
    assert (
        item["merchant_order_no"] == new.merchant_order_no
        and item["out_trade_no"] == new.out_trade_no
    )
    assert item["payload"] == json.loads(new.body) and item["payload"]["data"]["amount"] == 1234


def test_list_filters_by_order_status_and_time(api, merchant):
    now = timezone.now()
    failed = make_notification(merchant, status="FAILED", created_at=now - timedelta(hours=3))
    succeeded = make_notification(merchant, status="SUCCEEDED", created_at=now - timedelta(hours=1))

    assert ids(api.get("/api/v1/notifications", {"status": "FAILED"})) == [failed.webhook_id]
    assert ids(
        api.get("/api/v1/notifications", {"merchant_order_no": succeeded.merchant_order_no})
    ) == [succeeded.webhook_id]
    assert ids(api.get("/api/v1/notifications", {"out_trade_no": failed.out_trade_no})) == [
        failed.webhook_id
    ]
    window = {
        "created_after": (now - timedelta(hours=2)).isoformat(),
        "created_before": now.isoformat(),
    }
    assert ids(api.get("/api/v1/notifications", window)) == [succeeded.webhook_id]
    assert ids(api.get("/api/v1/notifications", {"out_trade_no": "P-none"})) == []


def test_list_pages_with_a_cursor_without_gaps_or_repeats(api, merchant):
    now = timezone.now()
    made = [make_notification(merchant, created_at=now - timedelta(seconds=i)) for i in range(5)]

    seen, url, pages = [], "/api/v1/notifications?limit=2", 0
    while url:
        page = api.get(url).json()
        seen += [item["id"] for item in page["results"]]
        url, pages = page["next"], pages + 1

    assert seen == [n.webhook_id for n in made]  # made newest first
    assert pages == 3


@pytest.mark.parametrize(
    "params",
    [
        {"colour": "red"},
        {"status": "DONE"},
        {"created_after": "yesterday"},
        {"limit": "0"},
        {"limit": "201"},
        {"merchant_order_no": "x" * 65},
    ],
    ids=["unknown param", "bad status", "bad time", "limit 0", "limit too big", "long order no"],
)
def test_list_refuses_bad_query_parameters_with_400(api, params):
    response = api.get("/api/v1/notifications", params)

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(params)


def test_the_api_needs_an_api_key(anon_api, merchant):
    record = make_notification(merchant)

    assert anon_api.get("/api/v1/notifications").status_code == 401
    assert anon_api.get(f"/api/v1/notifications/{record.webhook_id}").status_code == 401
    assert anon_api.post(f"/api/v1/notifications/{record.webhook_id}/resend").status_code == 401


# --- detail --------------------------------------------------------------------------------


def test_detail_shows_the_attempts_in_order(api, merchant):
    record = make_notification(merchant)
    make_attempt(record, outcome="failed", status_code=503, response_excerpt="busy")
    make_attempt(record, outcome="succeeded", status_code=200)

    response = api.get(f"/api/v1/notifications/{record.webhook_id}")

    assert response.status_code == 200
    data = response.json()
    assert data["id"] == record.webhook_id and data["attempt_count"] == 2
    assert [(a["number"], a["outcome"], a["status_code"]) for a in data["attempts"]] == [
        (1, "failed", 503),
        (2, "succeeded", 200),
    ]
    assert (
        data["attempts"][0]["response_excerpt"] == "busy"
        and data["attempts"][0]["error_class"] == "http_status"
    )
    assert "request_headers" not in data["attempts"][0]  # signatures stay in admin


def test_another_merchants_notification_is_404_everywhere(api, other_merchant):
    theirs = make_notification(other_merchant)

    for response in (
        api.get(f"/api/v1/notifications/{theirs.webhook_id}"),
        api.post(f"/api/v1/notifications/{theirs.webhook_id}/resend"),
        api.get("/api/v1/notifications/msg_nope"),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.next_attempt_at is not None and theirs.step == 0  # untouched


def test_detail_refuses_unknown_query_parameters(api, merchant):
    record = make_notification(merchant)

    assert api.get(f"/api/v1/notifications/{record.webhook_id}", {"expand": "1"}).status_code == 400


# --- resend --------------------------------------------------------------------------------


def test_resend_makes_a_failed_notification_due_now_with_the_same_webhook_id(api, merchant):
    record = make_notification(merchant, status="FAILED")
    make_attempt(record)
    body_before = record.body

    response = api.post(f"/api/v1/notifications/{record.webhook_id}/resend")

    assert response.status_code == 202
    assert response.json()["id"] == record.webhook_id and response.json()["status"] == "PENDING"
    record.refresh_from_db()
    assert record.status == "PENDING" and record.step == 0 and record.body == body_before
    assert record.next_attempt_at <= timezone.now()
    assert Notification.objects.filter(webhook_id=record.webhook_id).count() == 1  # no new record


def test_resend_of_a_succeeded_notification_sends_it_again_and_is_no_longer_succeeded(
    api, merchant
):
    record = make_notification(merchant, status="SUCCEEDED")
    Notification.objects.filter(pk=record.pk).update(succeeded_at=timezone.now())
    make_attempt(record, outcome="succeeded", status_code=200)

    response = api.post(f"/api/v1/notifications/{record.webhook_id}/resend")

    assert response.status_code == 202
    assert response.json()["status"] == "PENDING" and response.json()["succeeded_at"] is None
    record.refresh_from_db()
    assert record.status == "PENDING" and record.succeeded_at is None
    # the earlier success is still told by its attempt
    assert [
        a["outcome"]
        for a in api.get(f"/api/v1/notifications/{record.webhook_id}").json()["attempts"]
    ] == ["succeeded"]


def test_the_webhook_says_paid_at_exactly_as_the_order_api_does(api, merchant, payer):
    # given: a paid order and the notification of its order.paid, as orders publishes it
    order = order_create(
        merchant=merchant,
        merchant_order_no="PAID-1",
        amount=1234,
        currency="CNY",
        subject="s",
        payer_id=payer.pk,
    )[0]
    paid_at = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    force_status(
        Order.objects.filter(pk=order.pk),
        status=Order.Status.SUCCESS,
        pay_method="bank",
        paid_at=paid_at,
    )
    order.refresh_from_db()
    record = notification_create_for_order_paid(
        order_paid_event(order, fee=7, points=12, notify_url="")
    )

    in_the_api = api.get("/api/v1/orders/PAID-1").json()["paid_at"]

    assert json.loads(record.body)["data"]["paid_at"] == in_the_api == "2026-01-02T03:04:05.123456Z"


def test_resend_to_a_disabled_endpoint_is_409_and_changes_nothing(api, merchant):
    record = make_notification(merchant, status="FAILED")
    endpoint_disable(record.endpoint, reason="410 Gone from the shop")

    response = api.post(f"/api/v1/notifications/{record.webhook_id}/resend")

    assert response.status_code == 409 and response.json()["error"]["code"] == "endpoint_disabled"
    record.refresh_from_db()
    assert record.status == "FAILED"


def test_resend_refuses_unknown_query_parameters(api, merchant):
    record = make_notification(merchant, status="FAILED")

    assert api.post(f"/api/v1/notifications/{record.webhook_id}/resend?now=1").status_code == 400
    record.refresh_from_db()
    assert record.status == "FAILED"
