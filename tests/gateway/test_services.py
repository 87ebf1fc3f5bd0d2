"""Store first, validate second: every signed body is kept before it is read, a rejected one can
be read again after a fix (service, admin action, command)."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from paysys.contracts import BankPaymentSucceeded
from paysys.gateway import services
from paysys.gateway.models import BankNotify, BankNotifyReceipt
from paysys.messaging.models import Message
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__")

State = BankNotifyReceipt.State


def published() -> int:
    return Message.objects.using("default").filter(topic=BankPaymentSucceeded.TOPIC).values("message_id").distinct().count()


@pytest.fixture
def reader_bug(monkeypatch):
    """The gateway's reader refuses good notifies (a rule too strict), until the fix is deployed."""
    real = services.bank_notify_read

    def too_strict(raw_body):
        raise services.BankNotifyRejected("paid_at: unsupported format")

    monkeypatch.setattr(services, "bank_notify_read", too_strict)
    yield lambda: monkeypatch.setattr(services, "bank_notify_read", real)


def test_the_body_is_stored_before_it_is_read(monkeypatch):
    """The process dies while reading: the signed body is there, RECEIVED, for reprocessing."""
    def crash(raw_body):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(services, "bank_notify_read", crash)
    raw = encode(notify_body())

    with pytest.raises(RuntimeError):
        services.bank_notify_receive(raw_body=raw, signature="sig")

    receipt = BankNotifyReceipt.objects.get()
    assert (receipt.state, bytes(receipt.raw_body), receipt.signature) == (State.RECEIVED, raw, "sig")
    assert not BankNotify.objects.exists() and published() == 0


def test_a_rejected_notify_is_reprocessed_after_the_fix(reader_bug):
    raw = encode(notify_body())
    assert post(raw).status_code == 400
    receipt = BankNotifyReceipt.objects.get()
    assert (receipt.state, receipt.error, receipt.attempts) == (State.REJECTED, "invalid: paid_at: unsupported format", 1)

    reader_bug()  # the fix is deployed
    receipt = services.bank_notify_reprocess(receipt.pk)

    notify = BankNotify.objects.get()
    assert (receipt.state, receipt.bank_notify, receipt.error, receipt.attempts) == (State.PROCESSED, notify, "", 2)
    assert notify.raw_body == raw.decode()
    assert published() == 1


def test_reprocessing_a_processed_receipt_changes_nothing():
    post(encode(notify_body()))
    receipt = BankNotifyReceipt.objects.get()

    again = services.bank_notify_reprocess(receipt.pk)

    assert (again.state, again.attempts) == (State.PROCESSED, 1)
    assert BankNotify.objects.get().duplicates == 0
    assert published() == 1


def test_a_receipt_still_unreadable_stays_rejected_with_the_latest_reason():
    post(b"{")
    receipt = BankNotifyReceipt.objects.get()

    again = services.bank_notify_reprocess(receipt.pk)

    assert (again.state, again.attempts) == (State.REJECTED, 2)
    assert again.error == "malformed: body is not JSON"


def test_a_rejected_notify_whose_bank_trade_is_stored_since_is_a_duplicate(reader_bug):
    """The bank repeated the notify after the fix and it was stored: reprocessing the rejected
    copy links it to the stored notify and publishes nothing more."""
    raw = encode(notify_body())
    post(raw)
    reader_bug()
    post(raw)

    rejected = BankNotifyReceipt.objects.filter(state=State.REJECTED).get()
    receipt = services.bank_notify_reprocess(rejected.pk)

    assert (receipt.state, receipt.bank_notify) == (State.PROCESSED, BankNotify.objects.get())
    assert BankNotify.objects.get().duplicates == 1
    assert published() == 1


def test_to_reprocess_are_the_rejected_and_the_stranded():
    post(b"{")
    post(encode(notify_body()))
    stranded = BankNotifyReceipt.objects.create(raw_body=encode(notify_body(bank_trade_no="B2")), signature="s")
    fresh = BankNotifyReceipt.objects.create(raw_body=b"{}", signature="s")  # being read right now
    BankNotifyReceipt.objects.filter(pk=stranded.pk).update(received_at=timezone.now() - timedelta(minutes=5))

    pending = list(services.bank_notify_receipts_to_reprocess())

    assert [r.state for r in pending] == [State.REJECTED, State.RECEIVED]
    assert stranded in pending and fresh not in pending


def test_reprocess_command_reads_every_rejected_and_stranded_receipt(reader_bug):
    post(encode(notify_body(bank_trade_no="B1")))
    post(b"not json")
    reader_bug()
    out = StringIO()

    call_command("reprocess_bank_notifies", stdout=out)

    assert out.getvalue().splitlines() == [
        f"receipt {BankNotifyReceipt.objects.get(state=State.REJECTED).pk} still rejected: malformed: body is not JSON",
        "2 receipt(s): 1 processed, 1 rejected",
    ]
    assert BankNotify.objects.get().bank_trade_no == "B1"


def test_reprocess_command_takes_ids_and_names_unknown_ones(reader_bug):
    post(encode(notify_body()))
    receipt = BankNotifyReceipt.objects.get()
    reader_bug()
    out = StringIO()

    call_command("reprocess_bank_notifies", str(receipt.pk), "999999", stdout=out)

    assert out.getvalue().splitlines() == ["receipt 999999: no such receipt", "2 receipt(s): 1 processed, 0 rejected"]


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
        "/admin/gateway/banknotifyreceipt/", {"action": "reprocess_selected", "_selected_action": [receipt.pk]}, follow=True
    )

    assert "1 processed, 0 still rejected." in response.content.decode()
    assert BankNotifyReceipt.objects.get().state == State.PROCESSED
    assert published() == 1


def test_admin_cannot_add_edit_or_delete_receipts(admin_client):
    post(b"{")
    receipt = BankNotifyReceipt.objects.get()

    assert admin_client.get("/admin/gateway/banknotifyreceipt/add/").status_code == 403
    admin_client.post(f"/admin/gateway/banknotifyreceipt/{receipt.pk}/change/", {"state": "PROCESSED", "error": ""})
    assert BankNotifyReceipt.objects.get().state == State.REJECTED
