"""Booking vouchers: the only writes of the accounting service.

Every voucher is validated before anything is written (positive one-sided lines, known
accounts, Σ debit = Σ credit > 0) and its written lines are summed again inside the same
transaction before it commits: on MariaDB a check after commit (django-hordak's lesson) would
be too late to stop an unbalanced voucher. One voucher per business event: ``source`` is unique,
and a second booking of the same source returns the first voucher.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Sum

from accounting.models import CHART_OF_ACCOUNTS, Account, AccountCode, Voucher, VoucherLine
from paysys.contracts import ContractError, OrderPaid, RefundFinished, WalletCredited
from paysys.core.sql import insert_objects

logger = logging.getLogger(__name__)

ALIAS = "accounting"
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
SOURCE_MAX_LENGTH = Voucher._meta.get_field("source").max_length
DESCRIPTION_MAX_LENGTH = Voucher._meta.get_field("description").max_length

Line = tuple[str, int, int]  # account code, debit, credit (minor units; exactly one is > 0)


class VoucherError(ValueError):
    """A voucher that must not be booked."""


class InvalidVoucher(VoucherError):
    pass


class UnbalancedVoucher(VoucherError):
    pass


class UnknownAccount(VoucherError):
    pass


def chart_of_accounts_seed() -> int:
    """Create the standard accounts that are missing; returns how many were created.

    Migration 0002 seeds the chart; this restores it where the rows were removed (a test
    database flushed by a transactional test). Existing accounts are left as they are.
    """
    created = 0
    with transaction.atomic(using=ALIAS):
        for code, name, kind, normal_side in CHART_OF_ACCOUNTS:
            _, was_created = Account.objects.using(ALIAS).get_or_create(
                code=code, defaults={"name": name, "kind": kind, "normal_side": normal_side}
            )
            created += was_created
    return created


def voucher_book(
    *,
    source: str,
    currency: str,
    lines: list[Line],
    description: str = "",
    message_id: uuid.UUID | str | None = None,
) -> tuple[Voucher, bool]:
    """Book a balanced voucher for the business event ``source``, once.

    Returns ``(voucher, True)`` when booked now and ``(existing voucher, False)`` when ``source``
    was booked before (a redelivered message, a concurrent duplicate). Raises
    :class:`UnbalancedVoucher`, :class:`InvalidVoucher` or :class:`UnknownAccount` and writes
    nothing when the voucher is wrong.
    """
    entry = VoucherEntry(source, currency, lines, description, message_id).validated()
    try:
        # a savepoint: the duplicate's IntegrityError must not poison a caller's transaction
        with transaction.atomic(using=ALIAS):
            return vouchers_book_new([entry])[0], True
    except IntegrityError:
        existing = Voucher.objects.using(ALIAS).filter(source=source).first()
        if existing is None:  # not a duplicate source: something else is wrong
            raise
        _warn_if_different(existing, currency=currency, lines=entry.lines)
        return existing, False


@dataclass(frozen=True)
class VoucherEntry:
    """One voucher to book: what :func:`voucher_book` takes, for :func:`vouchers_book_new`."""

    source: str
    currency: str
    lines: list[Line]
    description: str = ""
    message_id: uuid.UUID | str | None = None

    def validated(self) -> VoucherEntry:
        """The same entry with checked lines; raises InvalidVoucher or UnbalancedVoucher."""
        _validate_header(source=self.source, currency=self.currency)
        lines = [_validated_line(line) for line in self.lines]
        total_debit = sum(debit for _, debit, _ in lines)
        total_credit = sum(credit for _, _, credit in lines)
        if total_debit != total_credit or total_debit <= 0:
            raise UnbalancedVoucher(
                f"voucher {self.source!r} does not balance: debits {total_debit}, credits {total_credit}"
            )
        return dataclasses.replace(
            self, lines=lines, description=self.description[:DESCRIPTION_MAX_LENGTH]
        )


def vouchers_book_new(entries: list[VoucherEntry]) -> list[Voucher]:
    """Book validated vouchers whose sources are new, with one INSERT for the vouchers and one
    for their lines, and sum what was written before commit. A source booked before raises
    IntegrityError (the caller's savepoint rolls all of them back; :func:`voucher_book` tells a
    duplicate apart). Must run inside ``atomic(using="accounting")``."""
    codes = {code for entry in entries for code, _, _ in entry.lines}
    accounts = {a.code: a for a in Account.objects.using(ALIAS).filter(code__in=codes)}
    for entry in entries:
        unknown = sorted({code for code, _, _ in entry.lines} - set(accounts))
        if unknown:
            raise UnknownAccount(
                f"voucher {entry.source!r} uses unknown account(s): {', '.join(unknown)}"
            )
    vouchers = Voucher.objects.using(ALIAS).bulk_create(
        Voucher(
            source=e.source, currency=e.currency, description=e.description, message_id=e.message_id
        )
        for e in entries
    )
    if any(v.pk is None for v in vouchers):  # a backend that returns no ids from a bulk INSERT
        by_source = dict(
            Voucher.objects.using(ALIAS)
            .filter(source__in=[v.source for v in vouchers])
            .values_list("source", "pk")
        )
        for voucher in vouchers:
            voucher.pk = by_source[voucher.source]
    insert_objects(
        ALIAS,
        [
            VoucherLine(voucher=voucher, account=accounts[code], debit=debit, credit=credit)
            for voucher, entry in zip(vouchers, entries, strict=False)
            for code, debit, credit in entry.lines
        ],
    )
    _assert_balanced_in_database(vouchers)
    return vouchers


# where the money of a payment comes from, by ``order.paid``'s method: the bank holds it, or
# it leaves the payer's wallet (a liability the platform held for the payer)
PAID_FROM = {"bank": AccountCode.BANK_CLEARING, "balance": AccountCode.PAYER_WALLETS}


def voucher_book_order_paid(
    payload: dict, *, message_id: uuid.UUID | str | None = None
) -> tuple[Voucher, bool]:
    """Book an ``order.paid`` event: the money came from the bank (bank clearing) or from the
    payer's wallet (payer wallets), the merchant is owed amount − fee, the platform earned the
    fee. The fee comes from the payload (orders computed it with ``paysys.core.money.fee_for``);
    recomputing it here could disagree with what funds credited.
    """
    entry = order_paid_entry(payload, message_id=message_id)
    return voucher_book(
        source=entry.source,
        currency=entry.currency,
        lines=entry.lines,
        description=entry.description,
        message_id=message_id,
    )


def vouchers_book_order_paid(events: list[tuple[dict, uuid.UUID | str | None]]) -> list[Voucher]:
    """:func:`voucher_book_order_paid` for a batch of new events, ``(payload, message_id)`` each:
    one statement per table for all of them (:func:`vouchers_book_new`). Raises if any of them is
    wrong or booked before; the consumer then books each alone."""
    return vouchers_book_new(
        [
            order_paid_entry(payload, message_id=message_id).validated()
            for payload, message_id in events
        ]
    )


def order_paid_entry(payload: dict, *, message_id: uuid.UUID | str | None = None) -> VoucherEntry:
    """The voucher of an ``order.paid`` payload (not validated yet)."""
    try:
        event = OrderPaid.from_payload(payload)
    except ContractError as exc:
        raise InvalidVoucher(str(exc)) from exc
    if event.method not in PAID_FROM:
        raise InvalidVoucher(
            f"{event.TOPIC} {event.out_trade_no}: unknown payment method {event.method!r}"
        )
    amount, fee = event.amount, event.fee
    lines = [
        (PAID_FROM[event.method], amount, 0),
        (AccountCode.MERCHANT_PAYABLE, 0, amount - fee),
        (AccountCode.FEE_INCOME, 0, fee),
    ]
    paid_by = (
        f"bank trade {event.bank_trade_no}"
        if event.method == "bank"
        else f"payer {event.payer_id}'s wallet"
    )
    return VoucherEntry(
        source=f"{event.TOPIC}:{event.out_trade_no}",
        currency=event.currency,
        lines=[line for line in lines if line[1] or line[2]],  # no zero lines (a fee-free merchant)
        description=(
            f"order {event.out_trade_no} paid: merchant {event.merchant_id} "
            f"order {event.merchant_order_no}, {paid_by}"
        ),
        message_id=message_id,
    )


def voucher_book_wallet_credited(
    payload: dict, *, message_id: uuid.UUID | str | None = None
) -> tuple[Voucher, bool]:
    """Book a payer's wallet credited by hand: the money is at the bank, the platform now holds
    it for the payer. One voucher per fund entry."""
    try:
        event = WalletCredited.from_payload(payload)
    except ContractError as exc:
        raise InvalidVoucher(str(exc)) from exc
    return voucher_book(
        source=f"{event.TOPIC}:{event.entry_id}",
        currency=event.currency,
        lines=[
            (AccountCode.BANK_CLEARING, event.amount, 0),
            (AccountCode.PAYER_WALLETS, 0, event.amount),
        ],
        description=f"wallet of payer {event.payer_id} credited by {event.credited_by}: {event.reason}",
        message_id=message_id,
    )


def voucher_book_refund(
    payload: dict, *, message_id: uuid.UUID | str | None = None
) -> tuple[Voucher, bool] | None:
    """Book a SUCCEEDED refund: the reverse of its payment's voucher for the refunded amount,
    fee excepted. The platform keeps its fee, as Stripe does (the payment was processed; the
    merchant gives back the whole refund from its balance): merchant payable is debited the
    refund, and the money leaves bank clearing (a bank refund) or returns to payer wallets (a
    balance refund). A FAILED refund moved no money: nothing is booked (None)."""
    try:
        event = RefundFinished.from_payload(payload)
    except ContractError as exc:
        raise InvalidVoucher(str(exc)) from exc
    if event.status != "SUCCEEDED" or event.kind != "order":  # a duplicate payment was never booked
        return None
    if event.method not in PAID_FROM:
        raise InvalidVoucher(
            f"{event.TOPIC} {event.refund_no}: unknown payment method {event.method!r}"
        )
    return voucher_book(
        source=f"{event.TOPIC}:{event.refund_no}",
        currency=event.currency,
        lines=[
            (AccountCode.MERCHANT_PAYABLE, event.amount, 0),
            (PAID_FROM[event.method], 0, event.amount),
        ],
        description=(
            f"refund {event.refund_no} of order {event.out_trade_no}: merchant {event.merchant_id} "
            f"refund {event.merchant_refund_no}, back to the payer by {event.method}"
        ),
        message_id=message_id,
    )


# --- validation ------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_header(*, source: str, currency: str) -> None:
    if not isinstance(source, str) or not source or len(source) > SOURCE_MAX_LENGTH:
        raise InvalidVoucher(f"source must be 1..{SOURCE_MAX_LENGTH} characters, got {source!r}")
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise InvalidVoucher(f"currency must be a 3-letter upper-case code, got {currency!r}")


def _validated_line(line) -> Line:
    try:
        code, debit, credit = line
    except (TypeError, ValueError):
        raise InvalidVoucher(f"a line is (account code, debit, credit), got {line!r}") from None
    if not isinstance(code, str) or not _is_int(debit) or not _is_int(credit):
        raise InvalidVoucher(f"a line is (str, int, int), got {line!r}")
    if debit < 0 or credit < 0 or (debit > 0) == (credit > 0):
        raise InvalidVoucher(f"a line debits or credits a positive amount, not both: {line!r}")
    return code, debit, credit


def _assert_balanced_in_database(vouchers: list[Voucher]) -> None:
    """Sum what was written, before commit; raising here rolls the vouchers back."""
    sums = {
        row["voucher_id"]: (row["debit"], row["credit"])
        for row in VoucherLine.objects.using(ALIAS)
        .filter(voucher_id__in=[v.pk for v in vouchers])
        .values("voucher_id")
        .annotate(debit=Sum("debit"), credit=Sum("credit"))
        .order_by()
    }
    for voucher in vouchers:
        debit, credit = sums.get(voucher.pk, (None, None))
        if not debit or debit != credit:
            raise UnbalancedVoucher(
                f"voucher {voucher.source!r} does not balance as written: debits {debit}, credits {credit}"
            )


def _warn_if_different(existing: Voucher, *, currency: str, lines: list[Line]) -> None:
    """A replay should carry the same event; a different one means a producer bug: say so loudly."""
    booked = sorted(
        VoucherLine.objects.using(ALIAS)
        .filter(voucher=existing)
        .values_list("account__code", "debit", "credit")
    )
    if existing.currency != currency or booked != sorted(lines):
        logger.error(
            "voucher %s already booked with %s %s; a replay asked for %s %s (kept the first)",
            existing.source,
            existing.currency,
            booked,
            currency,
            sorted(lines),
        )
