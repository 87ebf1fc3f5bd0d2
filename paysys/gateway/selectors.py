"""Reads of the gateway."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from paysys.gateway.models import BankNotify, BankNotifyReceipt

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
    return BankNotifyReceipt.objects.filter(
        state=Receipt.PROCESSED, received_at__lt=cutoff, processed_at__lt=cutoff
    )


def bank_notify_get(*, bank_trade_no: str) -> BankNotify | None:
    return BankNotify.objects.filter(bank_trade_no=bank_trade_no).first()


def bank_notifies_of(*, out_trade_no: str) -> list[tuple[BankNotify, list[BankNotifyReceipt]]]:
    """The stored notifies of an order (index on out_trade_no), each with the receipts that read it."""
    notifies = list(
        BankNotify.objects.filter(out_trade_no=out_trade_no).order_by("received_at", "id")
    )
    receipts: dict[int, list[BankNotifyReceipt]] = {}
    for receipt in BankNotifyReceipt.objects.filter(bank_notify__in=notifies).order_by(
        "received_at", "id"
    ):
        receipts.setdefault(receipt.bank_notify_id, []).append(receipt)
    return [(notify, receipts.get(notify.pk, [])) for notify in notifies]
