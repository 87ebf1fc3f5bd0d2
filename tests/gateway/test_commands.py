"""manage.py reprocess_bank_notifies: the admin action's twin."""

from io import StringIO

import pytest
from django.core.management import call_command

from paysys.gateway.models import BankNotify, BankNotifyReceipt
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__")

State = BankNotifyReceipt.State


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

    assert out.getvalue().splitlines() == [
        "receipt 999999: no such receipt",
        "2 receipt(s): 1 processed, 0 rejected",
    ]
