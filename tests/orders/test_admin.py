"""The orders admin: FLAGGED bank payments wait in a review queue; taking one off it needs
``orders.change_paymentrecord`` (issue 14, item 7: a view-only user could hide them)."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from orders.models import PaymentRecord

pytestmark = pytest.mark.django_db(databases="__all__")

CHANGELIST = "/admin/orders/paymentrecord/"
REVIEW_QUEUE = {"outcome__exact": "FLAGGED", "reviewed_at__isempty": "1"}


def staff(django_user_model, username: str, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(username, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="orders", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def flagged(db):
    return PaymentRecord.objects.create(
        bank_trade_no="B-ODD",
        out_trade_no="P-UNKNOWN",
        amount=100,
        currency="CNY",
        paid_at=timezone.now(),
        source="notify",
        outcome=PaymentRecord.Outcome.FLAGGED,
        reason="no such order",
    )


def mark_reviewed(client: Client, record: PaymentRecord):
    return client.post(
        CHANGELIST, {"action": "mark_reviewed", "_selected_action": [record.pk], "index": "0"}
    )


def in_review_queue(client: Client) -> set[str]:
    return {r.bank_trade_no for r in client.get(CHANGELIST, REVIEW_QUEUE).context["cl"].result_list}


def test_a_view_only_user_cannot_take_a_flagged_payment_off_the_review_queue(
    django_user_model, flagged
):
    viewer = staff(django_user_model, "viewer", "view_paymentrecord")

    response = mark_reviewed(viewer, flagged)

    assert "mark_reviewed" not in response.content.decode()  # not even offered
    flagged.refresh_from_db()
    assert flagged.reviewed_at is None
    assert in_review_queue(viewer) == {"B-ODD"}


def test_a_user_who_may_change_payment_records_marks_it_reviewed(django_user_model, flagged):
    reviewer = staff(django_user_model, "reviewer", "view_paymentrecord", "change_paymentrecord")

    assert mark_reviewed(reviewer, flagged).status_code == 302

    flagged.refresh_from_db()
    assert flagged.reviewed_at is not None
    assert in_review_queue(reviewer) == set()
