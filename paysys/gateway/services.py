from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.text import Truncator

from paysys.contracts import BankPaymentSucceeded
from paysys.gateway.models import BankNotify
from paysys.messaging import publish

logger = logging.getLogger(__name__)

# what a notify says about its payment: a later notify with the same bank_trade_no must agree
NOTIFY_CONTENT_FIELDS = ("out_trade_no", "amount", "currency", "status", "paid_at")
FLAG_PREFIX = "a later notify with the same bank_trade_no differed: "


class BankNotifyStored(NamedTuple):
    notify: BankNotify
    created: bool
    flagged: bool  # a duplicate whose content differs from the stored notify


def bank_notify_store(*, data: dict, raw_body: str, signature: str) -> BankNotifyStored:
    """Store a verified notify once and publish ``bank.payment_succeeded`` in the same local
    transaction. An identical duplicate only bumps a counter; a differing one keeps the stored
    data, flags the row for a human and keeps its raw body (the latest one wins)."""
    try:
        with transaction.atomic(using="default"):
            notify = BankNotify.objects.create(raw_body=raw_body, signature=signature, **data)
            event = BankPaymentSucceeded(
                bank_trade_no=notify.bank_trade_no, out_trade_no=notify.out_trade_no, amount=notify.amount,
                currency=notify.currency, paid_at=notify.paid_at.isoformat(), source="notify",
            )
            publish(event.TOPIC, event.to_payload(), using="default")
        return BankNotifyStored(notify, created=True, flagged=False)
    except IntegrityError:
        stored = BankNotify.objects.filter(bank_trade_no=data["bank_trade_no"]).first()
        if stored is None:
            raise  # not a duplicate notify: a real integrity problem
    return _bank_notify_duplicate(stored, data=data, raw_body=raw_body)


def _bank_notify_duplicate(stored: BankNotify, *, data: dict, raw_body: str) -> BankNotifyStored:
    row = BankNotify.objects.filter(pk=stored.pk)
    differences = [
        f"{name} {_shown(data[name])} != {_shown(getattr(stored, name))}"
        for name in NOTIFY_CONTENT_FIELDS
        if data[name] != getattr(stored, name)
    ]
    if not differences:
        row.update(duplicates=F("duplicates") + 1)
        return BankNotifyStored(row.get(), created=False, flagged=False)
    flag = Truncator(FLAG_PREFIX + ", ".join(differences)).chars(BankNotify._meta.get_field("flag").max_length)
    row.update(flag=flag, conflicting_body=raw_body)
    logger.error("bank notify %s flagged for a human: %s", stored.bank_trade_no, flag)
    return BankNotifyStored(row.get(), created=False, flagged=True)


def _shown(value) -> str:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)
