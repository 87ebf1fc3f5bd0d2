"""The only writes of the funds and points services.

Every balance change is one conditional UPDATE with F() expressions on a row this transaction
has locked (the ``*_for_update`` helpers; each step locks exactly one account), plus its entry;
nothing is read, changed in Python and written back. The database's CheckConstraints are the last word:
even a bug here cannot make a balance, a reservation or an available amount negative.

The TCC phases (``fund_credit_*``, ``fund_debit_*``, ``points_award_*``) run inside the
framework's ``atomic(using=<alias>)`` with its barrier row, which makes them idempotent and
orders them; see ``accounts.participants``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Direction, EntryKind, FundAccount, FundEntry, PointsAccount, PointsEntry
from paysys.contracts import WalletCredited
from paysys.core.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from paysys.core.models import Payer  # core identity: every app may read it
from paysys.messaging import publish

logger = logging.getLogger(__name__)

FUNDS = "funds"
POINTS = "points"
MAX_AMOUNT = 100_000_000_000  # 10^11 minor units, as orders
Owner = FundAccount.Owner


class LedgerError(RuntimeError):
    """A confirm or cancel found no reservation to act on: a framework or data bug, never a
    business outcome. Raised so the phase is retried and, past its limit, shown to a human."""


# --- locks: each step locks one account row, by its unique key; a transaction running several
# steps (a phase-two batch) must run them in one order (owner type, owner id) or risk a deadlock,
# which InnoDB resolves by rolling one back (the framework then redoes its ops one by one)


def fund_account_for_update(*, owner_type: str, owner_id: int, currency: str, create: bool) -> FundAccount | None:
    """The owner's account, locked; created (once, whoever races) when ``create``."""
    locked = FundAccount.objects.using(FUNDS).select_for_update().filter(
        owner_type=owner_type, owner_id=owner_id, currency=currency
    )
    account = locked.first()
    if account is None and create:
        _create_if_missing(FundAccount, FUNDS, owner_type=owner_type, owner_id=owner_id, currency=currency,
                           balance=0, frozen=0, pending_in=0)
        account = locked.get()
    return account


def points_account_for_update(*, payer_id: int, create: bool) -> PointsAccount | None:
    locked = PointsAccount.objects.using(POINTS).select_for_update().filter(payer_id=payer_id)
    account = locked.first()
    if account is None and create:
        _create_if_missing(PointsAccount, POINTS, payer_id=payer_id, balance=0, pending=0)
        account = locked.get()
    return account


_CREATE_IF_MISSING = {
    "mysql": "INSERT INTO {table} ({columns}) VALUES ({values}) ON DUPLICATE KEY UPDATE {pk} = {pk}",
    "sqlite": "INSERT OR IGNORE INTO {table} ({columns}) VALUES ({values})",
    "postgresql": "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING",
}


def _create_if_missing(model, alias: str, **values) -> None:
    """Insert the row unless one with its unique key exists, without failing.

    Not ``create()`` + IntegrityError: on InnoDB every loser of that race keeps a shared lock on
    the winner's row, and their following SELECT ... FOR UPDATE deadlock on it. ON DUPLICATE KEY
    UPDATE takes the exclusive lock at once, so first users of an account queue instead."""
    connection = connections[alias]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    values = {**values, "created_at": now, "updated_at": now}
    quote = connection.ops.quote_name
    sql = _CREATE_IF_MISSING[connection.vendor].format(
        table=quote(model._meta.db_table), columns=", ".join(quote(c) for c in values),
        values=", ".join(["%s"] * len(values)), pk=quote(model._meta.pk.column),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(values.values()))


# --- what a fund action is about: parsed from a TCC payload or given by a caller --------------


@dataclass(frozen=True)
class FundMove:
    owner_type: str
    owner_id: int
    amount: int
    currency: str
    out_trade_no: str = ""
    reason: str = ""

    @classmethod
    def from_payload(cls, payload: dict) -> FundMove:
        """``{"owner_type": "merchant"|"payer", "owner_id", "amount", "currency", "out_trade_no"?, "reason"?}``"""
        if not isinstance(payload, dict):
            raise InvalidInput("fund payload must be an object")
        move = cls(
            owner_type=payload.get("owner_type"),
            owner_id=payload.get("owner_id"),
            amount=payload.get("amount"),
            currency=payload.get("currency"),
            out_trade_no=payload.get("out_trade_no", ""),
            reason=payload.get("reason", ""),
        )
        move.validate()
        return move

    def validate(self) -> None:
        problems = {}
        if self.owner_type not in Owner.values:
            problems["owner_type"] = f"one of {', '.join(Owner.values)}"
        if not _is_int(self.owner_id) or self.owner_id < 1:
            problems["owner_id"] = "a positive integer"
        if not _is_int(self.amount) or not 1 <= self.amount <= MAX_AMOUNT:
            problems["amount"] = f"an integer between 1 and {MAX_AMOUNT} (minor units)"
        if not isinstance(self.currency, str) or len(self.currency) != 3 or not self.currency.isupper():
            problems["currency"] = "an ISO 4217 code"
        if not isinstance(self.out_trade_no, str) or len(self.out_trade_no) > 32:
            problems["out_trade_no"] = "at most 32 characters"
        if not isinstance(self.reason, str) or len(self.reason) > 255:
            problems["reason"] = "at most 255 characters"
        if problems:
            raise InvalidInput("invalid fund action", fields=problems)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fund_change(
    account: FundAccount, move: FundMove, *, kind: str, direction: str, xid: str | None,
    condition: Q, changes: dict, balance_delta: int = 0, created_by: str = "", request_key: str | None = None,
) -> FundEntry | None:
    """One conditional UPDATE on the locked ``account`` and its entry; None if ``condition`` failed."""
    updated = FundAccount.objects.using(FUNDS).filter(condition, pk=account.pk).update(
        **changes, updated_at=timezone.now()
    )
    if updated != 1:
        return None
    # exact: this transaction holds the row's lock since it read it
    return FundEntry.objects.using(FUNDS).create(
        account=account, kind=kind, direction=direction, amount=move.amount,
        balance_after=account.balance + balance_delta, xid=xid, out_trade_no=move.out_trade_no,
        reason=move.reason, created_by=created_by, request_key=request_key,
    )


def _reserved_account(move: FundMove, phase: str) -> FundAccount:
    account = fund_account_for_update(
        owner_type=move.owner_type, owner_id=move.owner_id, currency=move.currency, create=False
    )
    if account is None:
        raise LedgerError(f"{phase}: no fund account for {move.owner_type} #{move.owner_id} {move.currency}")
    return account


def _done(entry: FundEntry | None, phase: str, move: FundMove, xid: str) -> FundEntry:
    if entry is None:
        raise LedgerError(f"{phase} {xid}: nothing reserved for {move.amount} on {move.owner_type} #{move.owner_id}")
    return entry


# --- funds: credit (incoming) -------------------------------------------------------------------


def fund_credit_hold(*, move: FundMove, xid: str) -> FundEntry:
    """Try: reserve an incoming amount (pending_in); the account is created on first use."""
    account = fund_account_for_update(
        owner_type=move.owner_type, owner_id=move.owner_id, currency=move.currency, create=True
    )
    entry = _fund_change(
        account, move, kind=EntryKind.HOLD, direction=Direction.CREDIT, xid=xid,
        condition=Q(), changes={"pending_in": F("pending_in") + move.amount},
    )
    return _done(entry, "credit try", move, xid)


def fund_credit_post(*, move: FundMove, xid: str) -> FundEntry:
    """Confirm: move the reserved amount into the balance."""
    account = _reserved_account(move, "credit confirm")
    entry = _fund_change(
        account, move, kind=EntryKind.POSTED, direction=Direction.CREDIT, xid=xid,
        condition=Q(pending_in__gte=move.amount),
        changes={"pending_in": F("pending_in") - move.amount, "balance": F("balance") + move.amount},
        balance_delta=move.amount,
    )
    return _done(entry, "credit confirm", move, xid)


def fund_credit_release(*, move: FundMove, xid: str) -> FundEntry:
    """Cancel: give up the reservation."""
    account = _reserved_account(move, "credit cancel")
    entry = _fund_change(
        account, move, kind=EntryKind.RELEASED, direction=Direction.CREDIT, xid=xid,
        condition=Q(pending_in__gte=move.amount), changes={"pending_in": F("pending_in") - move.amount},
    )
    return _done(entry, "credit cancel", move, xid)


# --- funds: debit (outgoing) --------------------------------------------------------------------


def fund_debit_freeze(*, move: FundMove, xid: str) -> FundEntry:
    """Try: freeze the amount if available (balance - frozen) covers it, else InsufficientFunds."""
    account = fund_account_for_update(
        owner_type=move.owner_type, owner_id=move.owner_id, currency=move.currency, create=False
    )
    entry = None
    if account is not None:
        entry = _fund_change(
            account, move, kind=EntryKind.HOLD, direction=Direction.DEBIT, xid=xid,
            condition=Q(balance__gte=F("frozen") + move.amount), changes={"frozen": F("frozen") + move.amount},
        )
    if entry is None:
        raise InsufficientFunds(
            f"the {move.owner_type}'s available balance is below {move.amount} (minor units of {move.currency})"
        )
    return entry


def fund_debit_post(*, move: FundMove, xid: str) -> FundEntry:
    """Confirm: take the frozen amount out of the balance."""
    account = _reserved_account(move, "debit confirm")
    entry = _fund_change(
        account, move, kind=EntryKind.POSTED, direction=Direction.DEBIT, xid=xid,
        condition=Q(frozen__gte=move.amount),
        changes={"frozen": F("frozen") - move.amount, "balance": F("balance") - move.amount},
        balance_delta=-move.amount,
    )
    return _done(entry, "debit confirm", move, xid)


def fund_debit_unfreeze(*, move: FundMove, xid: str) -> FundEntry:
    """Cancel: unfreeze."""
    account = _reserved_account(move, "debit cancel")
    entry = _fund_change(
        account, move, kind=EntryKind.RELEASED, direction=Direction.DEBIT, xid=xid,
        condition=Q(frozen__gte=move.amount), changes={"frozen": F("frozen") - move.amount},
    )
    return _done(entry, "debit cancel", move, xid)


# --- funds: a payer's wallet credited by hand ---------------------------------------------------


def wallet_credit(
    *, payer_id: int, amount: int, reason: str, credited_by: str, currency: str | None = None,
    request_key: str | None = None,
) -> FundEntry:
    """Credit a payer's wallet by hand (admin, command): posts the credit with who and why and
    publishes ``WalletCredited`` in the same funds transaction, so accounting books it exactly once.

    ``request_key`` makes a resubmission (a double click, a retried command) return the first
    credit instead of crediting again; the same key for a different credit is a Conflict."""
    currency = currency or settings.ORDER_CURRENCIES[0]
    reason = (reason or "").strip()
    problems = {}
    if not _is_int(amount) or not 1 <= amount <= MAX_AMOUNT:
        problems["amount"] = f"an integer between 1 and {MAX_AMOUNT} (minor units)"
    if not reason or len(reason) > 255:
        problems["reason"] = "1-255 characters: why the wallet is credited"
    if currency not in settings.ORDER_CURRENCIES:
        problems["currency"] = f"one of {', '.join(settings.ORDER_CURRENCIES)}"
    if not credited_by or len(credited_by) > 150:
        problems["credited_by"] = "1-150 characters: who credits"
    if request_key is not None and not (isinstance(request_key, str) and 1 <= len(request_key) <= 64):
        problems["request_key"] = "1-64 characters"
    if problems:
        raise InvalidInput("wallet not credited", fields=problems)
    if not _is_int(payer_id) or not Payer.objects.filter(pk=payer_id).exists():
        raise NotFound(f"no payer #{payer_id}")

    move = FundMove(owner_type=Owner.PAYER, owner_id=payer_id, amount=amount, currency=currency, reason=reason)
    with transaction.atomic(using=FUNDS):
        account = fund_account_for_update(owner_type=Owner.PAYER, owner_id=payer_id, currency=currency, create=True)
        if request_key is not None:
            # looked up under the account's lock: a concurrent resubmission waits for this one
            earlier = FundEntry.objects.using(FUNDS).filter(request_key=request_key).first()
            if earlier is not None:
                if (earlier.account_id, earlier.amount) != (account.pk, amount):
                    raise Conflict("this request key was used for another credit", code="request_key_reused")
                return earlier
        entry = _fund_change(
            account, move, kind=EntryKind.POSTED, direction=Direction.CREDIT, xid=None, condition=Q(),
            changes={"balance": F("balance") + amount}, balance_delta=amount, created_by=credited_by,
            request_key=request_key,
        )
        event = WalletCredited(
            entry_id=entry.pk, payer_id=payer_id, amount=amount, currency=currency, reason=reason,
            credited_by=credited_by, credited_at=entry.created_at.isoformat(),
        )
        publish(event.TOPIC, event.to_payload(), using=FUNDS)
    logger.info("wallet of payer %s credited %s %s by %s: %s", payer_id, amount, currency, credited_by, reason)
    return entry


# --- points: award ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointsAward:
    payer_id: int
    points: int
    out_trade_no: str = ""
    reason: str = ""

    @classmethod
    def from_payload(cls, payload: dict) -> PointsAward:
        """``{"payer_id", "points", "out_trade_no"?, "reason"?}``; 0 points is a no-op award."""
        if not isinstance(payload, dict):
            raise InvalidInput("points payload must be an object")
        award = cls(
            payer_id=payload.get("payer_id"), points=payload.get("points"),
            out_trade_no=payload.get("out_trade_no", ""), reason=payload.get("reason", ""),
        )
        problems = {}
        if not _is_int(award.payer_id) or award.payer_id < 1:
            problems["payer_id"] = "a positive integer"
        if not _is_int(award.points) or not 0 <= award.points <= MAX_AMOUNT:
            problems["points"] = f"an integer between 0 and {MAX_AMOUNT}"
        if not isinstance(award.out_trade_no, str) or len(award.out_trade_no) > 32:
            problems["out_trade_no"] = "at most 32 characters"
        if not isinstance(award.reason, str) or len(award.reason) > 255:
            problems["reason"] = "at most 255 characters"
        if problems:
            raise InvalidInput("invalid points award", fields=problems)
        return award


def _points_change(
    account: PointsAccount, award: PointsAward, *, kind: str, xid: str, condition: Q, changes: dict,
    balance_delta: int = 0,
) -> PointsEntry:
    updated = PointsAccount.objects.using(POINTS).filter(condition, pk=account.pk).update(
        **changes, updated_at=timezone.now()
    )
    if updated != 1:
        raise LedgerError(f"points {kind} {xid}: nothing reserved for {award.points} points of payer #{award.payer_id}")
    return PointsEntry.objects.using(POINTS).create(
        account=account, kind=kind, points=award.points, balance_after=account.balance + balance_delta,
        xid=xid, out_trade_no=award.out_trade_no, reason=award.reason,
    )


def points_award_hold(*, award: PointsAward, xid: str) -> PointsEntry | None:
    if award.points == 0:
        return None
    account = points_account_for_update(payer_id=award.payer_id, create=True)
    return _points_change(
        account, award, kind=EntryKind.HOLD, xid=xid, condition=Q(), changes={"pending": F("pending") + award.points}
    )


def points_award_post(*, award: PointsAward, xid: str) -> PointsEntry | None:
    if award.points == 0:
        return None
    account = points_account_for_update(payer_id=award.payer_id, create=False)
    if account is None:
        raise LedgerError(f"points confirm {xid}: payer #{award.payer_id} has no points account")
    return _points_change(
        account, award, kind=EntryKind.POSTED, xid=xid, condition=Q(pending__gte=award.points),
        changes={"pending": F("pending") - award.points, "balance": F("balance") + award.points},
        balance_delta=award.points,
    )


def points_award_release(*, award: PointsAward, xid: str) -> PointsEntry | None:
    if award.points == 0:
        return None
    account = points_account_for_update(payer_id=award.payer_id, create=False)
    if account is None:
        raise LedgerError(f"points cancel {xid}: payer #{award.payer_id} has no points account")
    return _points_change(
        account, award, kind=EntryKind.RELEASED, xid=xid, condition=Q(pending__gte=award.points),
        changes={"pending": F("pending") - award.points},
    )
