"""The gateway's intake of bank notifies: store first, validate second, then store the notify
once and publish ``bank.payment_succeeded`` in the same local transaction.

    signed body -> read and validated -> BankNotify + message + receipt PROCESSED
                -> or unreadable      -> receipt REJECTED with the reason (admin, reprocess)
                -> or anything else   -> receipt RECEIVED, for a human to reprocess
    (one local transaction, one commit: the receipt commits with whatever its reading reached)
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import Truncator
from rest_framework import serializers

from paysys.api.fields import StrictIntegerField, TextField
from paysys.api.parsers import loads_strict
from paysys.contracts import BankPaymentSucceeded
from paysys.core.errors import InvalidInput
from paysys.core.sql import is_deadlock
from paysys.gateway.models import BankNotify, BankNotifyReceipt
from paysys.messaging import publish

logger = logging.getLogger(__name__)

# what a notify says about its payment: a later notify with the same bank_trade_no must agree
NOTIFY_CONTENT_FIELDS = ("out_trade_no", "amount", "currency", "status", "paid_at")
FLAG_PREFIX = "a later notify with the same bank_trade_no differed: "
Receipt = BankNotifyReceipt.State


class BankNotifyRejected(InvalidInput):
    """A correctly signed notify the gateway cannot read. Its receipt is REJECTED with the reason."""


class BankNotifyStored(NamedTuple):
    notify: BankNotify
    created: bool
    flagged: bool  # a duplicate whose content differs from the stored notify


class BankNotifyDocument(serializers.Serializer):
    """What a notify body must say."""

    bank_trade_no = TextField(min_length=1, max_length=64)
    out_trade_no = TextField(min_length=1, max_length=64)
    amount = StrictIntegerField(min_value=1, max_value=10**15)
    currency = TextField(min_length=3, max_length=3)
    status = serializers.ChoiceField(choices=["SUCCESS"])
    paid_at = serializers.DateTimeField()


def bank_notify_receive(*, raw_body: bytes, signature: str) -> BankNotifyStored:
    """Store a correctly signed body and read it. The caller has checked the signature: an
    unsigned body is the caller's to refuse, never stored.

    One local transaction, one commit per notify: the receipt, the notify and its message commit
    together, and the receipt is written once, in the state its reading reached. The notify is
    written in a savepoint (bank_notify_store's atomic block), so a body that cannot be read still
    commits its receipt REJECTED with the reason, and any other failure commits it RECEIVED, for a
    human to reprocess, before the error reaches the caller.

    Copies of one notify arriving at once (a bank resending) can deadlock on the stored row: the
    transaction InnoDB rolls back wrote nothing, and runs again (up to ``DEADLOCK_ATTEMPTS``); the
    copy is then a duplicate like any other. A failure that cost the whole transaction keeps the
    receipt RECEIVED in a transaction of its own."""
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            return _receive(raw_body, signature)
        except _TransactionLost as lost:
            error = lost.__cause__
            if is_deadlock(error) and attempt < DEADLOCK_ATTEMPTS:
                time.sleep(random.uniform(0, 0.01 * attempt))  # the copies apart
                continue
            _keep_received(raw_body, signature)
            raise error from None
    raise AssertionError("unreachable")


DEADLOCK_ATTEMPTS = 5


class _TransactionLost(Exception):
    """The receive's transaction is rolled back (its cause: a deadlock, a lost connection)."""


def _receive(raw_body: bytes, signature: str) -> BankNotifyStored:
    with transaction.atomic(using="default"):
        receipt = BankNotifyReceipt(raw_body=raw_body, signature=signature[:128])
        try:
            return bank_notify_process(receipt)
        except BankNotifyRejected as exc:
            failure = exc  # recorded on the receipt
        except Exception as exc:  # noqa: BLE001 - re-raised once the receipt is committed
            if transaction.get_rollback(using="default"):
                raise _TransactionLost from exc  # nothing more can be written in it
            if receipt.pk is None or not BankNotifyReceipt.objects.filter(pk=receipt.pk).exists():
                # not written, or written in the savepoint that failed: kept RECEIVED, as it came
                BankNotifyReceipt.objects.create(raw_body=raw_body, signature=signature[:128])
            failure = exc
    raise failure


def _keep_received(raw_body: bytes, signature: str) -> None:
    try:
        BankNotifyReceipt.objects.create(raw_body=raw_body, signature=signature[:128])
    except DatabaseError:
        logger.warning("bank notify receipt not kept: the database does not answer", exc_info=True)


def bank_notify_process(receipt: BankNotifyReceipt) -> BankNotifyStored:
    """Read a receipt (new, or stored earlier) and store its notify. Raises
    :class:`BankNotifyRejected` after recording why on the receipt."""
    try:
        data, text = bank_notify_read(bytes(receipt.raw_body))
    except BankNotifyRejected as exc:
        _receipt_move(receipt, Receipt.REJECTED, error=_describe(exc))
        raise
    return bank_notify_store(data=data, raw_body=text, signature=receipt.signature, receipt=receipt)


def bank_notify_reprocess(receipt_id: int) -> BankNotifyReceipt:
    """Read a REJECTED (or stranded RECEIVED) receipt again, after a fix; returns it as it ends
    up. One reader at a time: the receipt is locked while it is read."""
    with transaction.atomic(using="default"):
        receipt = (
            BankNotifyReceipt.objects.select_for_update()
            .filter(pk=receipt_id, state__in=BankNotifyReceipt.sources_of(Receipt.PROCESSED))
            .first()
        )
        if receipt is not None:
            try:
                bank_notify_process(receipt)
            except BankNotifyRejected:
                pass  # recorded on the receipt
    return BankNotifyReceipt.objects.get(pk=receipt_id)


def bank_notify_read(raw_body: bytes) -> tuple[dict, str]:
    """The validated fields of a notify body and its text, or BankNotifyRejected."""
    try:
        # json.loads would also take UTF-16 or UTF-32 bytes; the bank speaks UTF-8 (RFC 8259)
        text = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise BankNotifyRejected("body is not UTF-8 text", code="malformed") from None
    try:
        # a leading BOM is ignored, as json.loads of the bytes did; the stored text keeps it
        payload = loads_strict(text.removeprefix("\ufeff"))  # no NaN, infinity or absurd nesting
    except ValueError:
        raise BankNotifyRejected("body is not JSON", code="malformed") from None
    if not isinstance(payload, dict):
        raise BankNotifyRejected("body must be a JSON object", code="malformed")
    document = BankNotifyDocument(data=payload)
    if not document.is_valid():
        fields = {
            name: "; ".join(str(m) for m in messages) for name, messages in document.errors.items()
        }
        raise BankNotifyRejected("the request has invalid fields", fields=fields)
    return document.validated_data, text


def bank_notify_store(
    *, data: dict, raw_body: str, signature: str, receipt: BankNotifyReceipt | None = None
) -> BankNotifyStored:
    """Store a verified notify once and publish ``bank.payment_succeeded`` in the same local
    transaction. An identical duplicate only bumps a counter; a differing one keeps the stored
    data, flags the row for a human and keeps its raw body (the latest one wins)."""
    try:
        with transaction.atomic(using="default"):
            notify = BankNotify.objects.create(raw_body=raw_body, signature=signature, **data)
            event = BankPaymentSucceeded(
                bank_trade_no=notify.bank_trade_no,
                out_trade_no=notify.out_trade_no,
                amount=notify.amount,
                currency=notify.currency,
                paid_at=notify.paid_at.isoformat(),
                source="notify",
            )
            publish(event, using="default", business_key=notify.out_trade_no)
            if receipt is not None:
                _receipt_move(receipt, Receipt.PROCESSED, bank_notify=notify)
        return BankNotifyStored(notify, created=True, flagged=False)
    except IntegrityError:
        stored = BankNotify.objects.filter(bank_trade_no=data["bank_trade_no"]).first()
        if stored is None:
            raise  # not a duplicate notify: a real integrity problem
    if receipt is not None:
        _receipt_move(receipt, Receipt.PROCESSED, bank_notify=stored)
    return _bank_notify_duplicate(stored, data=data, raw_body=raw_body)


def _receipt_move(
    receipt: BankNotifyReceipt, new: str, *, error: str = "", bank_notify: BankNotify | None = None
) -> None:
    """Record the outcome of one reading: a new receipt is written in that state (one INSERT);
    a stored one moves there if it still may."""
    outcome = {"error": error, "bank_notify": bank_notify, "processed_at": timezone.now()}
    if receipt.pk is None:  # first read: the receipt is created in its outcome
        for name, value in {"state": new, **outcome}.items():
            setattr(receipt, name, value)
        receipt.attempts = 1
        receipt.save()
        return
    BankNotifyReceipt.objects.filter(pk=receipt.pk).transition(
        new, attempts=F("attempts") + 1, **outcome
    )


def _describe(exc: BankNotifyRejected) -> str:
    fields = "".join(f"\n{name}: {problem}" for name, problem in (exc.fields or {}).items())
    return f"{exc.code}: {exc.message}{fields}"


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
    flag = Truncator(FLAG_PREFIX + ", ".join(differences)).chars(
        BankNotify._meta.get_field("flag").max_length
    )
    row.update(flag=flag, conflicting_body=raw_body)
    logger.error("bank notify %s flagged for a human: %s", stored.bank_trade_no, flag)
    return BankNotifyStored(row.get(), created=False, flagged=True)


def _shown(value) -> str:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)
