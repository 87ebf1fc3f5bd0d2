"""The bank notify admin: read-only, with flagged notifies (conflicting duplicates) easy to find."""

import pytest

from paysys.gateway.models import BankNotify
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__")

CHANGELIST = "/admin/gateway/banknotify/"


@pytest.fixture
def flagged_and_clean() -> tuple[BankNotify, BankNotify]:
    post(encode(notify_body(bank_trade_no="B-FLAGGED")))
    post(encode(notify_body(bank_trade_no="B-FLAGGED", amount=100)))
    post(encode(notify_body(bank_trade_no="B-CLEAN", out_trade_no="PS2")))
    return BankNotify.objects.get(bank_trade_no="B-FLAGGED"), BankNotify.objects.get(bank_trade_no="B-CLEAN")


@pytest.mark.parametrize("value,expected", [("yes", {"B-FLAGGED"}), ("no", {"B-CLEAN"}), (None, {"B-FLAGGED", "B-CLEAN"})])
def test_changelist_filters_by_flagged(admin_client, flagged_and_clean, value, expected):
    response = admin_client.get(CHANGELIST, {"flagged": value} if value else {})

    assert response.status_code == 200
    assert {n.bank_trade_no for n in response.context["cl"].result_list} == expected


def test_changelist_shows_the_flag(admin_client, flagged_and_clean):
    flagged, _ = flagged_and_clean

    response = admin_client.get(CHANGELIST)

    assert "flag" in response.context["cl"].list_display
    assert flagged.flag.encode() in response.content


def test_notify_page_is_read_only_with_the_conflicting_body(admin_client, flagged_and_clean):
    flagged, _ = flagged_and_clean

    response = admin_client.get(f"{CHANGELIST}{flagged.pk}/change/")

    assert response.status_code == 200
    assert b"&quot;amount&quot;: 100" in response.content  # the conflicting raw body is shown
    assert response.context["adminform"].form.fields == {}  # nothing editable
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{flagged.pk}/delete/", {"post": "yes"}).status_code == 403
    assert BankNotify.objects.filter(pk=flagged.pk).exists()
