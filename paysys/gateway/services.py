from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from paysys.gateway.models import BankNotify
from paysys.messaging.services import publish

TOPIC_PAYMENT_SUCCEEDED = "bank.payment_succeeded"


def bank_notify_store(*, data: dict, raw_body: bytes, signature: str) -> tuple[BankNotify, bool]:
    """Store a verified notify once and publish ``bank.payment_succeeded`` in the same local
    transaction. Returns ``(notify, created)``; a duplicate only bumps a counter."""
    try:
        with transaction.atomic(using="default"):
            notify = BankNotify.objects.create(raw_body=raw_body.decode(), signature=signature, **data)
            publish(
                TOPIC_PAYMENT_SUCCEEDED,
                {
                    "bank_trade_no": notify.bank_trade_no,
                    "out_trade_no": notify.out_trade_no,
                    "amount": notify.amount,
                    "currency": notify.currency,
                    "paid_at": notify.paid_at.isoformat(),
                    "source": "notify",
                },
                using="default",
            )
        return notify, True
    except IntegrityError:
        existing = BankNotify.objects.filter(bank_trade_no=data["bank_trade_no"])
        if not existing.update(duplicates=F("duplicates") + 1):
            raise  # not a duplicate notify: a real integrity problem
        return existing.get(), False
