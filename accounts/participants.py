"""The funds and points services as TCC participants, registered by name (never imported by the
initiator). The framework runs each function inside ``atomic(using=<alias>)`` together with its
barrier rows, so duplicate, empty and late phases never reach this code. A batched function
(``tcc.many``) gets many branches' ops and applies all or raises (see ``paysys.tcc.registry``).

Payloads (built by the initiator; the framework hands the same payload to all three phases):

* ``funds.credit`` / ``funds.debit``: ``{"owner_type": "merchant"|"payer", "owner_id": int,
  "amount": int (minor units, > 0), "currency": "CNY", "out_trade_no"?: str, "reason"?: str}``.
  A debit try raises ``paysys.core.errors.InsufficientFunds`` when available < amount.
* ``points.award``: ``{"payer_id": int, "points": int (>= 0; 0 changes nothing),
  "out_trade_no"?: str, "reason"?: str}``; compute points with ``paysys.core.money.points_for``.
"""

from __future__ import annotations

import logging

from accounts import services
from accounts.services import FundMove, PointsAward, XidAward, XidMove
from paysys import tcc
from paysys.core.steps import log_steps

logger = logging.getLogger(__name__)

# Credits and awards are batched (``tcc.many``): the framework hands them many branches at once,
# a payment's merchant credit and points award being the hot path. Debits stay one at a time:
# each try is refused or not on its own (InsufficientFunds), and balance payments are rarer.


def _moves(ops: list[tcc.BranchOp]) -> list[XidMove]:
    return [(op.xid, FundMove.from_payload(op.payload)) for op in ops]


def _awards(ops: list[tcc.BranchOp]) -> list[XidAward]:
    return [(op.xid, PointsAward.from_payload(op.payload)) for op in ops]


@tcc.many
def credit_try(ops: list[tcc.BranchOp]) -> None:
    services.fund_credit_hold(moves=_moves(ops))


@tcc.many
def credit_confirm(ops: list[tcc.BranchOp]) -> None:
    moves = _moves(ops)
    services.fund_credit_post(moves=moves)
    log_steps(
        logger,
        "order %s: %s %s credited %s %s",
        [
            (move.out_trade_no, move.owner_type, move.owner_id, move.amount, move.currency)
            for _, move in moves
        ],
        using="funds",
    )


@tcc.many
def credit_cancel(ops: list[tcc.BranchOp]) -> None:
    services.fund_credit_release(moves=_moves(ops))


def debit_try(payload: dict, *, xid: str) -> None:
    services.fund_debit_freeze(move=FundMove.from_payload(payload), xid=xid)


def debit_confirm(payload: dict, *, xid: str) -> None:
    move = FundMove.from_payload(payload)
    services.fund_debit_post(move=move, xid=xid)
    log_steps(
        logger,
        "order %s: %s %s debited %s %s",
        [(move.out_trade_no, move.owner_type, move.owner_id, move.amount, move.currency)],
        using="funds",
    )


def debit_cancel(payload: dict, *, xid: str) -> None:
    services.fund_debit_unfreeze(move=FundMove.from_payload(payload), xid=xid)


@tcc.many
def award_try(ops: list[tcc.BranchOp]) -> None:
    services.points_award_hold(awards=_awards(ops))


@tcc.many
def award_confirm(ops: list[tcc.BranchOp]) -> None:
    awards = _awards(ops)
    services.points_award_post(awards=awards)
    log_steps(
        logger,
        "order %s: payer %s awarded %s points",
        [(award.out_trade_no, award.payer_id, award.points) for _, award in awards if award.points],
        using="points",
    )


@tcc.many
def award_cancel(ops: list[tcc.BranchOp]) -> None:
    services.points_award_release(awards=_awards(ops))


# action name -> (alias = queue, try, confirm, cancel)
ACTIONS = {
    "funds.credit": ("funds", credit_try, credit_confirm, credit_cancel),
    "funds.debit": ("funds", debit_try, debit_confirm, debit_cancel),
    "points.award": ("points", award_try, award_confirm, award_cancel),
}


def register() -> None:
    for action, (alias, try_, confirm, cancel) in ACTIONS.items():
        tcc.participant(action, alias=alias, queue=alias, try_=try_, confirm=confirm, cancel=cancel)


# --- refunds: the merchant gives the amount back, the payer's points are reversed ----------------
#
# ``funds.refund``: ``{"owner_type": "merchant", "owner_id", "amount", "currency", "out_trade_no",
# "reason", "settle": "now"|"later"}``; ``points.reverse``: ``{"payer_id", "points", "out_trade_no",
# "reason", "settle"}``. The try freezes (a debit hold; points never below zero); the confirm posts
# when ``settle`` is "now" (a balance payment's refund), else leaves the hold for the bank's answer:
# the ``refund.finished`` consumers (accounts.consumers) then post it or release it.


def refund_try(payload: dict, *, xid: str) -> None:
    services.fund_debit_freeze(move=FundMove.from_payload(payload), xid=xid)


def refund_confirm(payload: dict, *, xid: str) -> None:
    if payload.get("settle") == "now":
        debit_confirm(payload, xid=xid)


def refund_cancel(payload: dict, *, xid: str) -> None:
    services.fund_debit_unfreeze(move=FundMove.from_payload(payload), xid=xid)


def reverse_try(payload: dict, *, xid: str) -> None:
    services.points_reverse_hold(award=PointsAward.from_payload(payload), xid=xid)


def reverse_confirm(payload: dict, *, xid: str) -> None:
    if payload.get("settle") == "now":
        services.points_reverse_post(award=PointsAward.from_payload(payload), xid=xid)


def reverse_cancel(payload: dict, *, xid: str) -> None:
    services.points_reverse_release(award=PointsAward.from_payload(payload), xid=xid)


ACTIONS["funds.refund"] = ("funds", refund_try, refund_confirm, refund_cancel)
ACTIONS["points.reverse"] = ("points", reverse_try, reverse_confirm, reverse_cancel)
