"""The gateway admin: bank notifies read-only, with flagged ones (conflicting duplicates) easy to
find; receipts read-only, a rejected one reprocessed by an action."""

import pytest

from paysys.gateway.models import BankNotify, BankNotifyReceipt
from tests.gateway.conftest import published
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__")

CHANGELIST = "/admin/gateway/banknotify/"


@pytest.fixture
def flagged_and_clean() -> tuple[BankNotify, BankNotify]:
    post(encode(notify_body(bank_trade_no="B-FLAGGED")))
    post(encode(notify_body(bank_trade_no="B-FLAGGED", amount=100)))
    post(encode(notify_body(bank_trade_no="B-CLEAN", out_trade_no="PS2")))
    return BankNotify.objects.get(bank_trade_no="B-FLAGGED"), BankNotify.objects.get(
        bank_trade_no="B-CLEAN"
    )


@pytest.mark.parametrize(
    "value,expected",
    [("yes", {"B-FLAGGED"}), ("no", {"B-CLEAN"}), (None, {"B-FLAGGED", "B-CLEAN"})],
)
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
    assert (
        admin_client.post(f"{CHANGELIST}{flagged.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert BankNotify.objects.filter(pk=flagged.pk).exists()


def test_admin_lists_a_rejected_receipt_and_reprocesses_it(admin_client, reader_bug):
    post(encode(notify_body()))
    receipt = BankNotifyReceipt.objects.get()

    page = admin_client.get("/admin/gateway/banknotifyreceipt/", {"state__exact": "REJECTED"})
    assert page.status_code == 200
    assert "paid_at: unsupported format" in page.content.decode()
    detail = admin_client.get(f"/admin/gateway/banknotifyreceipt/{receipt.pk}/change/")
    assert "B20261127100000AB12" in detail.content.decode()  # the body as signed

    reader_bug()
    response = admin_client.post(
        "/admin/gateway/banknotifyreceipt/",
        {"action": "reprocess_selected", "_selected_action": [receipt.pk]},
        follow=True,
    )

    assert "1 processed, 0 still rejected." in response.content.decode()
    assert BankNotifyReceipt.objects.get().state == BankNotifyReceipt.State.PROCESSED
    assert published() == 1


def test_admin_cannot_add_edit_or_delete_receipts(admin_client):
    post(b"{")
    receipt = BankNotifyReceipt.objects.get()

    assert admin_client.get("/admin/gateway/banknotifyreceipt/add/").status_code == 403
    admin_client.post(
        f"/admin/gateway/banknotifyreceipt/{receipt.pk}/change/",
        {"state": "PROCESSED", "error": ""},
    )
    assert BankNotifyReceipt.objects.get().state == BankNotifyReceipt.State.REJECTED
