"""Reads of the gateway."""

from datetime import timedelta

import pytest
from django.utils import timezone

from paysys.gateway.models import BankNotifyReceipt
from paysys.gateway.selectors import bank_notify_receipts_to_reprocess
from tests.gateway.test_notify import encode, notify_body, post

pytestmark = pytest.mark.django_db(databases="__all__")

State = BankNotifyReceipt.State


def test_to_reprocess_are_the_rejected_and_the_stranded_not_the_fresh():
    post(b"{")
    post(encode(notify_body()))
    stranded = BankNotifyReceipt.objects.create(
        raw_body=encode(notify_body(bank_trade_no="B2")), signature="s"
    )
    fresh = BankNotifyReceipt.objects.create(raw_body=b"{}", signature="s")  # being read right now
    BankNotifyReceipt.objects.filter(pk=stranded.pk).update(
        received_at=timezone.now() - timedelta(minutes=5)
    )

    pending = list(bank_notify_receipts_to_reprocess())

    assert [r.state for r in pending] == [State.REJECTED, State.RECEIVED]
    assert stranded in pending and fresh not in pending
