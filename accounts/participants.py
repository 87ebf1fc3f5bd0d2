"""The funds and points services as TCC participants, registered by name (never imported by the
initiator). The framework runs each function inside ``atomic(using=<alias>)`` together with its
barrier rows, so duplicate, empty and late phases never reach this code. A batched function
(``tcc.many``) gets many branches' ops and applies all or raises (see ``paysys.tcc.registry``).

Every phase parses its payload with the action's contract (``paysys.contracts.branches``:
``FundCredit``, ``FundDebit``, ``PointsAward``, ``FundRefund``, ``PointsReversal``); a payload
that does not match fails the phase with ``InvalidInput`` naming the wrong fields. A debit try
raises ``paysys.core.errors.InsufficientFunds`` when available < amount.
"""

from __future__ import annotations

import logging

from accounts import services
from accounts.services import XidAward, XidMove
from paysys import tcc
from paysys.contracts import (
    FundCredit,
    FundDebit,
    FundRefund,
    PointsAward,
    PointsReversal,
)
from paysys.core.steps import log_steps

logger = logging.getLogger(__name__)

# Every op of a payment is batched (``tcc.many``): the framework hands it many branches at once
# (a bank batch's merchant credits and points awards; a group of balance payments' debits). A
# batch that fails (one wallet short) is redone op by op, where each try is refused on its own.


def _moves(ops: list[tcc.BranchOp], contract=FundCredit) -> list[XidMove]:
    return [(op.xid, contract.from_payload(op.payload)) for op in ops]


def _awards(ops: list[tcc.BranchOp]) -> list[XidAward]:
    return [(op.xid, PointsAward.from_payload(op.payload)) for op in ops]


@tcc.many
def credit_try(ops: list[tcc.BranchOp]) -> None:
    services.fund_credit_hold(moves=_moves(ops))


@tcc.many
def credit_confirm(ops: list[tcc.BranchOp]) -> None:
    moves = _moves(ops)
    services.fund_credit_post(moves=moves)
    _log_moves(moves, "credited")


@tcc.many
def credit_cancel(ops: list[tcc.BranchOp]) -> None:
    services.fund_credit_release(moves=_moves(ops))


@tcc.many
def debit_try(ops: list[tcc.BranchOp]) -> None:
    services.fund_debit_freeze(moves=_moves(ops, FundDebit))


@tcc.many
def debit_confirm(ops: list[tcc.BranchOp]) -> None:
    _debit_post(_moves(ops, FundDebit))


def _debit_post(moves: list[XidMove]) -> None:
    services.fund_debit_post(moves=moves)
    _log_moves(moves, "debited")


def _log_moves(moves: list[XidMove], verb: str) -> None:
    log_steps(
        logger,
        f"order %s: %s %s {verb} %s %s",
        [
            (move.out_trade_no, move.owner_type, move.owner_id, move.amount, move.currency)
            for _, move in moves
        ],
        using="funds",
    )


@tcc.many
def debit_cancel(ops: list[tcc.BranchOp]) -> None:
    services.fund_debit_unfreeze(moves=_moves(ops, FundDebit))


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
    FundCredit.ACTION: ("funds", credit_try, credit_confirm, credit_cancel),
    FundDebit.ACTION: ("funds", debit_try, debit_confirm, debit_cancel),
    PointsAward.ACTION: ("points", award_try, award_confirm, award_cancel),
}


def register() -> None:
    for action, (alias, try_, confirm, cancel) in ACTIONS.items():
        tcc.participant(action, alias=alias, queue=alias, try_=try_, confirm=confirm, cancel=cancel)


# --- refunds: the merchant gives the amount back, the payer's points are reversed ----------------
#
# The try freezes (a debit hold; points never below zero); the confirm posts when ``settle`` is
# "now" (a balance payment's refund), else leaves the hold for the bank's answer: the
# ``refund.finished`` consumers (accounts.consumers) then post it or release it.


def refund_try(payload: dict, *, xid: str) -> None:
    services.fund_debit_freeze(moves=[(xid, FundRefund.from_payload(payload))])


def refund_confirm(payload: dict, *, xid: str) -> None:
    move = FundRefund.from_payload(payload)
    if move.settle == "now":
        _debit_post([(xid, move)])


def refund_cancel(payload: dict, *, xid: str) -> None:
    services.fund_debit_unfreeze(moves=[(xid, FundRefund.from_payload(payload))])


def reverse_try(payload: dict, *, xid: str) -> None:
    services.points_reverse_hold(award=PointsReversal.from_payload(payload), xid=xid)


def reverse_confirm(payload: dict, *, xid: str) -> None:
    reversal = PointsReversal.from_payload(payload)
    if reversal.settle == "now":
        services.points_reverse_post(award=reversal, xid=xid)


def reverse_cancel(payload: dict, *, xid: str) -> None:
    services.points_reverse_release(award=PointsReversal.from_payload(payload), xid=xid)


ACTIONS[FundRefund.ACTION] = ("funds", refund_try, refund_confirm, refund_cancel)
ACTIONS[PointsReversal.ACTION] = ("points", reverse_try, reverse_confirm, reverse_cancel)
