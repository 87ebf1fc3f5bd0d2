"""The only writes of the funds and points services.

Every balance change is a conditional UPDATE with F() expressions on a row this transaction has
locked (the ``*_accounts_for_update`` helpers lock all the accounts a call touches in one query,
in key order), plus its entry; nothing is read, changed in Python and written back. The
database's CheckConstraints are the last word: even a bug here cannot make a balance, a
reservation or an available amount negative.

The TCC phases (``fund_credit_*``, ``fund_debit_*``, ``points_award_*``) run inside the
framework's ``atomic(using=<alias>)`` with its barrier rows, which makes them idempotent and
orders them; see ``accounts.participants``. They take many moves at once, for throughput: one
lock query, one UPDATE for every account with its summed amount and one insert of all entries,
whatever the number of moves; one move is just a batch of one.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable
from functools import reduce

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Direction, EntryKind, FundAccount, FundEntry, PointsAccount, PointsEntry
from paysys.contracts import FundMove, PointsAward, WalletCredited
from paysys.core.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from paysys.core.models import Payer  # core identity: every app may read it
from paysys.core.money import MAX_AMOUNT
from paysys.core.sql import insert_new_rows, insert_objects
from paysys.messaging import publish

logger = logging.getLogger(__name__)

FUNDS = "funds"
POINTS = "points"
Owner = FundAccount.Owner


class LedgerError(RuntimeError):
    """A confirm or cancel found no reservation to act on: a framework or data bug, never a
    business outcome. Raised so the phase is retried and, past its limit, shown to a human."""


# --- locks: one query locks all the accounts of a call, by primary key and in its order, so two
# transactions locking overlapping sets queue instead of deadlocking (if InnoDB still picks a
# victim, the TCC framework redoes its ops one by one)

FundKey = tuple[str, int, str]  # (owner_type, owner_id, currency): a fund account's unique key
PointsKey = tuple[int]  # (payer_id,)


def fund_accounts_for_update(
    keys: Iterable[FundKey], *, create: bool
) -> dict[FundKey, FundAccount]:
    """The accounts of ``keys``, locked; the missing ones created (once, whoever races) when
    ``create``, else left out."""
    return _accounts_for_update(
        FundAccount,
        FUNDS,
        ("owner_type", "owner_id", "currency"),
        keys,
        create=create,
        zeros=("balance", "frozen", "pending_in"),
    )


def fund_account_for_update(
    *, owner_type: str, owner_id: int, currency: str, create: bool
) -> FundAccount | None:
    key = (owner_type, owner_id, currency)
    return fund_accounts_for_update([key], create=create).get(key)


def points_accounts_for_update(
    keys: Iterable[PointsKey], *, create: bool
) -> dict[PointsKey, PointsAccount]:
    return _accounts_for_update(
        PointsAccount,
        POINTS,
        ("payer_id",),
        keys,
        create=create,
        zeros=("balance", "pending", "frozen"),
    )


def _accounts_for_update(
    model, alias: str, key_fields: tuple[str, ...], keys, *, create: bool, zeros
) -> dict:
    """Find the accounts' ids by their unique keys (no lock), then lock them by one
    SELECT ... FOR UPDATE of an id list, in id order.

    Why not lock by the unique keys directly: on a small table MariaDB plans an OR of keys as a
    table scan, which locks in scan order and waits on every row, and deadlocks against the same
    query planned on the index; an id list is always a range of the primary key, locked in
    order. A key's id never changes (keys are immutable, accounts are not deleted while in use),
    so this process remembers the ids it has read and asks only for new keys; the locked rows
    are checked against their keys, and a remembered id that no longer holds its key (a test
    database emptied, bench_tcc's cleanup) is looked up again. A vanished account is left out,
    as a missing one."""
    keys = set(keys)
    if not keys:
        return {}
    for _ in range(2):  # the second round only after a remembered id turned out stale
        ids = _ids_by_key(model, alias, key_fields, keys)
        missing = keys - ids.keys()
        if missing and create:
            rows = [
                {**dict(zip(key_fields, key, strict=False)), **dict.fromkeys(zeros, 0)}
                for key in sorted(missing)
            ]
            _create_if_missing(model, alias, rows)
            ids = _ids_by_key(model, alias, key_fields, keys)
        locked = _lock_by_id(model, alias, key_fields, ids)
        stale = [key for key in ids if key not in locked]
        if not stale:
            break
        _forget_ids(model, alias, stale)
    return {key: row for key, row in locked.items() if key in keys}


def _lock_by_id(model, alias: str, key_fields: tuple[str, ...], ids: dict) -> dict:
    rows = model.objects.using(alias).select_for_update().filter(pk__in=ids.values()).order_by("pk")
    return {tuple(getattr(row, field) for field in key_fields): row for row in rows}


# (database, table, key) -> id: the account ids this process has read (a key's id never changes)
_known_ids: dict[tuple, int] = {}
_KNOWN_IDS_LIMIT = 100_000


def _ids_by_key(model, alias: str, key_fields: tuple[str, ...], keys: set) -> dict:
    where = (connections[alias].settings_dict["NAME"], model._meta.db_table)
    ids = {key: _known_ids[(*where, key)] for key in keys if (*where, key) in _known_ids}
    if unknown := keys - ids.keys():
        match = reduce(
            operator.or_, (Q(**dict(zip(key_fields, key, strict=False))) for key in unknown)
        )
        found = {
            tuple(row[:-1]): row[-1]
            for row in model.objects.using(alias).filter(match).values_list(*key_fields, "pk")
        }
        if len(_known_ids) > _KNOWN_IDS_LIMIT:
            _known_ids.clear()
        _known_ids.update({(*where, key): pk for key, pk in found.items()})
        ids.update(found)
    return ids


def _forget_ids(model, alias: str, keys: list) -> None:
    where = (connections[alias].settings_dict["NAME"], model._meta.db_table)
    for key in keys:
        _known_ids.pop((*where, key), None)


def _create_if_missing(model, alias: str, rows: list[dict]) -> None:
    """Insert the rows (one statement) except those whose unique key exists, without failing.

    Not ``create()`` + IntegrityError: on InnoDB every loser of that race keeps a shared lock on
    the winner's row, and their following SELECT ... FOR UPDATE deadlock on it. Locking the
    existing row at once (``lock_existing``) makes first users of an account queue instead."""
    now = connections[alias].ops.adapt_datetimefield_value(timezone.now())
    columns = [*rows[0], "created_at", "updated_at"]
    insert_new_rows(
        alias, model, columns, [(*row.values(), now, now) for row in rows], lock_existing=True
    )


def _fund_change(
    account: FundAccount,
    move: FundMove,
    *,
    kind: str,
    direction: str,
    xid: str | None,
    condition: Q,
    changes: dict,
    balance_delta: int = 0,
    created_by: str = "",
    request_key: str | None = None,
) -> FundEntry | None:
    """One conditional UPDATE on the locked ``account`` and its entry; None if ``condition`` failed."""
    updated = (
        FundAccount.objects.using(FUNDS)
        .filter(condition, pk=account.pk)
        .update(**changes, updated_at=timezone.now())
    )
    if updated != 1:
        return None
    # exact: this transaction holds the row's lock since it read it
    return FundEntry.objects.using(FUNDS).create(
        account=account,
        kind=kind,
        direction=direction,
        amount=move.amount,
        balance_after=account.balance + balance_delta,
        xid=xid,
        out_trade_no=move.out_trade_no,
        reason=move.reason,
        created_by=created_by,
        request_key=request_key,
    )


# --- moves, many at once: the TCC framework hands a participant many branches in one
# transaction; if anything fails the framework rolls it back and redoes the branches one by one


Move = tuple[str, tuple, int]  # (xid, the account's key, amount)


def _shift(
    model,
    alias: str,
    accounts: dict,
    moves: list[Move],
    *,
    add: tuple[str, ...] = (),
    subtract: tuple[str, ...] = (),
    covered: tuple[str, str] | None = None,
    phase: str,
    refuse=None,
) -> list[int]:
    """Add each amount to the columns ``add`` and take it from the columns ``subtract`` of its
    locked account, in ONE conditional UPDATE for every account (each by the sum of its amounts:
    ``CASE id WHEN ... END``): only where every ``subtract`` column holds at least the sum and,
    with ``covered=(a, b)``, where ``a >= b + sum`` (a debit's try: the balance covers what is
    frozen and this). An account missing or short raises ``refuse()`` (default: a LedgerError,
    a reservation that should be there and is not).

    Returns each move's balance_after: the account's balance running through the moves in order
    (exact: this transaction holds the accounts' locks since it read them)."""
    totals: dict[tuple, int] = {}
    for _, key, amount in moves:
        totals[key] = totals.get(key, 0) + amount
    missing = [key for key in totals if key not in accounts]
    if missing or _update_by_case(
        model,
        alias,
        {accounts[k].pk: t for k, t in totals.items()},
        add=add,
        subtract=subtract,
        covered=covered,
    ) != len(totals):
        short = missing or list(totals)
        if refuse is not None:
            raise refuse()
        xids = ", ".join(xid for xid, key, _ in moves if key in short)
        raise LedgerError(
            f"{phase} {xids}: nothing reserved for these amounts on {model.__name__} {', '.join(map(str, short))}"
        )
    step = ("balance" in add) - ("balance" in subtract)  # a hold or a release leaves it as it is
    balances, running = [], {key: accounts[key].balance for key in totals}
    for _, key, amount in moves:
        running[key] += step * amount
        balances.append(running[key])
    return balances


def _update_by_case(
    model,
    alias: str,
    amounts: dict[int, int],
    *,
    add: tuple[str, ...],
    subtract: tuple[str, ...],
    covered: tuple[str, str] | None,
) -> int:
    """Per account id ``add += amount``, ``subtract -= amount``, where each ``subtract`` column
    holds at least the amount and ``covered[0] >= covered[1] + amount``: one statement for any
    number of accounts (the WHERE reads the row as it was). Returns the rows it matched (all of
    them, or the batch is short somewhere). Plain SQL: the ORM's Case/When compiles each WHEN,
    per column."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    pk = quote(model._meta.pk.column)
    case = f"CASE {pk} {' '.join(['WHEN %s THEN %s'] * len(amounts))} END"
    by_id = [value for pair in amounts.items() for value in pair]
    sets, where = [f"{quote('updated_at')} = %s"], [f"{pk} IN ({', '.join(['%s'] * len(amounts))})"]
    params_set, params_where = (
        [connection.ops.adapt_datetimefield_value(timezone.now())],
        list(amounts),
    )
    for column in subtract:
        sets.append(f"{quote(column)} = {quote(column)} - {case}")
        params_set += by_id
        where.append(f"{quote(column)} >= {case}")
        params_where += by_id
    for column in add:
        sets.append(f"{quote(column)} = {quote(column)} + {case}")
        params_set += by_id
    if covered:
        where.append(f"{quote(covered[0])} >= {quote(covered[1])} + {case}")
        params_where += by_id
    sql = f"UPDATE {quote(model._meta.db_table)} SET {', '.join(sets)} WHERE {' AND '.join(where)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params_set + params_where)
        return cursor.rowcount


# --- funds: credits (incoming) and debits (outgoing), many moves at once -----------------------

XidMove = tuple[str, FundMove]  # (the TCC transaction, its move)


def fund_credit_hold(*, moves: list[XidMove]) -> int:
    """Try: reserve incoming amounts (pending_in); accounts are created on first use."""
    return _fund_moves(
        moves, Direction.CREDIT, phase="credit try", kind=EntryKind.HOLD, add=("pending_in",)
    )


def fund_credit_post(*, moves: list[XidMove]) -> int:
    """Confirm: move the reserved amounts into the balance."""
    return _fund_moves(
        moves,
        Direction.CREDIT,
        phase="credit confirm",
        kind=EntryKind.POSTED,
        subtract=("pending_in",),
        add=("balance",),
    )


def fund_credit_release(*, moves: list[XidMove]) -> int:
    """Cancel: give up the reservations."""
    return _fund_moves(
        moves,
        Direction.CREDIT,
        phase="credit cancel",
        kind=EntryKind.RELEASED,
        subtract=("pending_in",),
    )


def fund_debit_freeze(*, moves: list[XidMove]) -> int:
    """Try: freeze each amount where the available balance (balance - frozen) covers it, else
    InsufficientFunds (for a batch: the framework then redoes each move alone, which names the
    one short)."""
    return _fund_moves(
        moves,
        Direction.DEBIT,
        phase="debit try",
        kind=EntryKind.HOLD,
        add=("frozen",),
        covered=("balance", "frozen"),
        refuse=lambda accounts: _insufficient(moves, accounts),
    )


def fund_debit_post(*, moves: list[XidMove]) -> int:
    """Confirm: take the frozen amounts out of the balance."""
    return _fund_moves(
        moves,
        Direction.DEBIT,
        phase="debit confirm",
        kind=EntryKind.POSTED,
        subtract=("frozen", "balance"),
    )


def fund_debit_unfreeze(*, moves: list[XidMove]) -> int:
    """Cancel: unfreeze."""
    return _fund_moves(
        moves, Direction.DEBIT, phase="debit cancel", kind=EntryKind.RELEASED, subtract=("frozen",)
    )


def _insufficient(moves: list[XidMove], accounts: dict) -> InsufficientFunds:
    if len(moves) > 1:
        return InsufficientFunds("an available balance is below the amounts of this batch")
    [(_, move)] = moves
    message = f"the {move.owner_type}'s available balance is below {move.amount} (minor units of {move.currency})"
    if move.owner_type == "merchant":  # its own balance, which it may read (never a payer's)
        account = accounts.get((move.owner_type, move.owner_id, move.currency))
        available = account.balance - account.frozen if account is not None else 0
        message += (
            f": {available} available, {move.amount - available} short (a refund gives back "
            "the whole amount while the payment's fee stays with the platform)"
        )
    return InsufficientFunds(message)


def _fund_moves(
    moves: list[XidMove],
    direction: str,
    *,
    phase: str,
    kind: str,
    add: tuple[str, ...] = (),
    subtract: tuple[str, ...] = (),
    covered: tuple[str, str] | None = None,
    refuse=None,
) -> int:
    """One lock query, one UPDATE and one insert of entries for any number of moves."""
    keys = [(move.owner_type, move.owner_id, move.currency) for _, move in moves]
    # only a credit's try may meet a new account: every other phase needs one that exists
    accounts = fund_accounts_for_update(keys, create=direction == Direction.CREDIT and not subtract)
    balances = _shift(
        FundAccount,
        FUNDS,
        accounts,
        [(xid, key, move.amount) for (xid, move), key in zip(moves, keys, strict=False)],
        add=add,
        subtract=subtract,
        covered=covered,
        phase=phase,
        refuse=refuse and (lambda: refuse(accounts)),
    )
    return insert_objects(
        FUNDS,
        [
            FundEntry(
                account=accounts[key],
                kind=kind,
                direction=direction,
                amount=move.amount,
                balance_after=balance,
                xid=xid,
                out_trade_no=move.out_trade_no,
                reason=move.reason,
            )
            for (xid, move), key, balance in zip(moves, keys, balances, strict=False)
        ],
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wallet_credit(
    *,
    payer_id: int,
    amount: int,
    reason: str,
    credited_by: str,
    currency: str | None = None,
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
    if request_key is not None and not (
        isinstance(request_key, str) and 1 <= len(request_key) <= 64
    ):
        problems["request_key"] = "1-64 characters"
    if problems:
        raise InvalidInput("wallet not credited", fields=problems)
    if not _is_int(payer_id) or not Payer.objects.filter(pk=payer_id).exists():
        raise NotFound(f"no payer #{payer_id}")

    move = FundMove(
        owner_type=Owner.PAYER, owner_id=payer_id, amount=amount, currency=currency, reason=reason
    )
    with transaction.atomic(using=FUNDS):
        account = fund_account_for_update(
            owner_type=Owner.PAYER, owner_id=payer_id, currency=currency, create=True
        )
        if request_key is not None:
            # looked up under the account's lock: a concurrent resubmission waits for this one
            earlier = FundEntry.objects.using(FUNDS).filter(request_key=request_key).first()
            if earlier is not None:
                if (earlier.account_id, earlier.amount) != (account.pk, amount):
                    raise Conflict(
                        "this request key was used for another credit", code="request_key_reused"
                    )
                return earlier
        entry = _fund_change(
            account,
            move,
            kind=EntryKind.POSTED,
            direction=Direction.CREDIT,
            xid=None,
            condition=Q(),
            changes={"balance": F("balance") + amount},
            balance_delta=amount,
            created_by=credited_by,
            request_key=request_key,
        )
        event = WalletCredited(
            entry_id=entry.pk,
            payer_id=payer_id,
            amount=amount,
            currency=currency,
            reason=reason,
            credited_by=credited_by,
            credited_at=entry.created_at.isoformat(),
        )
        publish(event, using=FUNDS)
    logger.info(
        "wallet of payer %s credited %s %s by %s: %s",
        payer_id,
        amount,
        currency,
        credited_by,
        reason,
    )
    return entry


# --- points: award ------------------------------------------------------------------------------


XidAward = tuple[str, PointsAward]


def points_award_hold(*, awards: list[XidAward]) -> int:
    """Try: reserve the points (pending); accounts are created on first use."""
    return _points_awards(awards, phase="points try", kind=EntryKind.HOLD, add=("pending",))


def points_award_post(*, awards: list[XidAward]) -> int:
    """Confirm: move the reserved points into the balance."""
    return _points_awards(
        awards,
        phase="points confirm",
        kind=EntryKind.POSTED,
        subtract=("pending",),
        add=("balance",),
    )


def points_award_release(*, awards: list[XidAward]) -> int:
    """Cancel: give up the reserved points."""
    return _points_awards(
        awards, phase="points cancel", kind=EntryKind.RELEASED, subtract=("pending",)
    )


def _points_awards(
    awards: list[XidAward],
    *,
    phase: str,
    kind: str,
    add: tuple[str, ...] = (),
    subtract: tuple[str, ...] = (),
) -> int:
    awards = [
        (xid, award) for xid, award in awards if award.points
    ]  # 0 points: nothing to award, no account
    if not awards:
        return 0
    keys = [(award.payer_id,) for _, award in awards]
    accounts = points_accounts_for_update(keys, create=not subtract)
    balances = _shift(
        PointsAccount,
        POINTS,
        accounts,
        [(xid, key, award.points) for (xid, award), key in zip(awards, keys, strict=False)],
        add=add,
        subtract=subtract,
        phase=phase,
    )
    return insert_objects(
        POINTS,
        [
            PointsEntry(
                account=accounts[key],
                kind=kind,
                points=award.points,
                balance_after=balance,
                xid=xid,
                out_trade_no=award.out_trade_no,
                reason=award.reason,
            )
            for (xid, award), key, balance in zip(awards, keys, balances, strict=False)
        ],
    )


# --- points: a refund's reversal (outgoing, never below zero) ------------------------------------


def points_reverse_hold(*, award: PointsAward, xid: str) -> PointsEntry | None:
    """Try: freeze the points a refund takes back, at most the payer's available points (balance
    - frozen): points are never taken below zero, what the payer no longer has is forgiven (the
    entry's reason says how many were wanted). None when nothing is taken."""
    if not award.points:
        return None
    account = points_accounts_for_update([(award.payer_id,)], create=False).get((award.payer_id,))
    take = min(award.points, account.balance - account.frozen) if account else 0
    if take <= 0:
        logger.info(
            "refund %s: payer %s has no points left to reverse (%s wanted)",
            xid,
            award.payer_id,
            award.points,
        )
        return None
    PointsAccount.objects.using(POINTS).filter(
        pk=account.pk, balance__gte=F("frozen") + take
    ).update(frozen=F("frozen") + take, updated_at=timezone.now())
    reason = (
        award.reason
        if take == award.points
        else f"{award.reason} ({award.points} wanted, {take} available)"
    )
    return PointsEntry.objects.using(POINTS).create(
        account=account,
        kind=EntryKind.HOLD,
        direction=Direction.DEBIT,
        points=take,
        balance_after=account.balance,
        xid=xid,
        out_trade_no=award.out_trade_no,
        reason=reason[:255],
    )


def points_reverse_post(*, award: PointsAward, xid: str) -> PointsEntry | None:
    """Confirm (or the bank's yes): take the frozen points out of the balance."""
    return _points_reverse_settle(award, xid, kind=EntryKind.POSTED)


def points_reverse_release(*, award: PointsAward, xid: str) -> PointsEntry | None:
    """Cancel (or the bank's no): unfreeze them."""
    return _points_reverse_settle(award, xid, kind=EntryKind.RELEASED)


def _points_reverse_settle(award: PointsAward, xid: str, *, kind: str) -> PointsEntry | None:
    account = points_accounts_for_update([(award.payer_id,)], create=False).get((award.payer_id,))
    hold = (
        account
        and PointsEntry.objects.using(POINTS)
        .filter(account=account, xid=xid, direction=Direction.DEBIT, kind=EntryKind.HOLD)
        .first()
    )
    if not hold:
        return None  # the try took nothing
    if (
        PointsEntry.objects.using(POINTS)
        .filter(
            account=account,
            xid=xid,
            direction=Direction.DEBIT,
            kind__in=[EntryKind.POSTED, EntryKind.RELEASED],
        )
        .exists()
    ):
        return None  # settled already (a redelivered message)
    changes = {"frozen": F("frozen") - hold.points}
    if kind == EntryKind.POSTED:
        changes["balance"] = F("balance") - hold.points
    updated = (
        PointsAccount.objects.using(POINTS)
        .filter(pk=account.pk, frozen__gte=hold.points)
        .update(**changes, updated_at=timezone.now())
    )
    if updated != 1:
        raise LedgerError(
            f"points reversal {xid}: {hold.points} not frozen on payer #{award.payer_id}"
        )
    after = account.balance - hold.points if kind == EntryKind.POSTED else account.balance
    return PointsEntry.objects.using(POINTS).create(
        account=account,
        kind=kind,
        direction=Direction.DEBIT,
        points=hold.points,
        balance_after=after,
        xid=xid,
        out_trade_no=award.out_trade_no,
        reason=hold.reason,
    )
