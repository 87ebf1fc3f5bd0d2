from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from paysys.gateway.models import BankNotify


def bank_notify_store(*, data: dict, raw_body: bytes, signature: str) -> tuple[BankNotify, bool]:
    """Store a verified notify once. Returns ``(notify, created)``; a duplicate only bumps a counter."""
    try:
        with transaction.atomic(using="default"):
            notify = BankNotify.objects.create(
                raw_body=raw_body.decode(), signature=signature, **data
            )
        return notify, True
    except IntegrityError:
        BankNotify.objects.filter(bank_trade_no=data["bank_trade_no"]).update(duplicates=F("duplicates") + 1)
        return BankNotify.objects.get(bank_trade_no=data["bank_trade_no"]), False
