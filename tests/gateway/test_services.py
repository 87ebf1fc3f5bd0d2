"""Store first, validate second: every signed body is kept before it is read, and a rejected
one is read again after a fix."""

import re

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from paysys.gateway import services
from paysys.gateway.models import BankNotify, BankNotifyReceipt
from tests.gateway.conftest import published
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__")

State = BankNotifyReceipt.State


def test_the_body_is_stored_before_it_is_read(monkeypatch):
    """The process dies while reading: the signed body is there, RECEIVED, for reprocessing."""

    def crash(raw_body):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(services, "bank_notify_read", crash)
    raw = encode(notify_body())

    with pytest.raises(RuntimeError):
        services.bank_notify_receive(raw_body=raw, signature="sig")

    receipt = BankNotifyReceipt.objects.get()
    assert (receipt.state, bytes(receipt.raw_body), receipt.signature) == (
        State.RECEIVED,
        raw,
        "sig",
    )
    assert not BankNotify.objects.exists() and published() == 0


def test_a_rejected_notify_is_reprocessed_after_the_fix(reader_bug):
    raw = encode(notify_body())
    assert post(raw).status_code == 400
    receipt = BankNotifyReceipt.objects.get()
    assert (receipt.state, receipt.error, receipt.attempts) == (
        State.REJECTED,
        "invalid: paid_at: unsupported format",
        1,
    )

    reader_bug()  # the fix is deployed
    receipt = services.bank_notify_reprocess(receipt.pk)

    notify = BankNotify.objects.get()
    assert (receipt.state, receipt.bank_notify, receipt.error, receipt.attempts) == (
        State.PROCESSED,
        notify,
        "",
        2,
    )
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


def test_a_new_notify_writes_each_row_once():
    """The hot path: the receipt is inserted once, already PROCESSED (no UPDATE after it), with
    the notify and its message, in one transaction."""
    with CaptureQueriesContext(connections["default"]) as queries:
        services.bank_notify_receive(raw_body=encode(notify_body()), signature="sig")

    # Django logs an executemany as "N times: INSERT ...": the verb is the first word after it.
    verbs = [
        re.sub(r"^\d+ times: ", "", q["sql"]).split()[0].upper() for q in queries.captured_queries
    ]
    writes = [verb for verb in verbs if verb in ("INSERT", "UPDATE", "DELETE")]
    assert writes == ["INSERT", "INSERT", "INSERT"]  # notify, message(s) in one statement, receipt
    receipt = BankNotifyReceipt.objects.get()
    assert (receipt.state, receipt.bank_notify, receipt.attempts) == (
        State.PROCESSED,
        BankNotify.objects.get(),
        1,
    )
    assert receipt.processed_at is not None and published() == 1
