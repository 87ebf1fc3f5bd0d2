"""Reads of the gateway."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from paysys.gateway.models import BankNotifyReceipt

Receipt = BankNotifyReceipt.State
# a RECEIVED receipt older than this was left by a process that died while reading it
STRANDED_AFTER = timedelta(minutes=1)


def bank_notify_receipts_to_reprocess() -> QuerySet[BankNotifyReceipt]:
    """Every REJECTED receipt, and RECEIVED ones a dead process left behind."""
    stranded = timezone.now() - STRANDED_AFTER
    return BankNotifyReceipt.objects.filter(
        Q(state=Receipt.REJECTED) | Q(state=Receipt.RECEIVED, received_at__lt=stranded)
    ).order_by("pk")


def bank_notify_receipts_processed_before(cutoff) -> QuerySet[BankNotifyReceipt]:
    """Receipts retention may delete: PROCESSED (their notify is stored) and received and
    processed before ``cutoff``. RECEIVED and REJECTED ones wait for their reading or a human."""
    return BankNotifyReceipt.objects.filter(state=Receipt.PROCESSED, received_at__lt=cutoff, processed_at__lt=cutoff)
