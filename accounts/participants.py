"""The funds and points services as TCC participants, registered by name (never imported by the
initiator). The framework runs each function inside ``atomic(using=<alias>)`` together with its
barrier row, so duplicate, empty and late phases never reach this code.

Payloads (built by the initiator; the framework hands the same payload to all three phases):

* ``funds.credit`` / ``funds.debit``: ``{"owner_type": "merchant"|"payer", "owner_id": int,
  "amount": int (minor units, > 0), "currency": "CNY", "out_trade_no"?: str, "reason"?: str}``.
  A debit try raises ``paysys.core.errors.InsufficientFunds`` when available < amount.
* ``points.award``: ``{"payer_id": int, "points": int (>= 0; 0 changes nothing),
  "out_trade_no"?: str, "reason"?: str}``; compute points with ``paysys.core.money.points_for``.
"""

from __future__ import annotations

from accounts import services
from accounts.services import FundMove, PointsAward


def credit_try(payload: dict, *, xid: str) -> None:
    services.fund_credit_hold(move=FundMove.from_payload(payload), xid=xid)


def credit_confirm(payload: dict, *, xid: str) -> None:
    services.fund_credit_post(move=FundMove.from_payload(payload), xid=xid)


def credit_cancel(payload: dict, *, xid: str) -> None:
    services.fund_credit_release(move=FundMove.from_payload(payload), xid=xid)


def debit_try(payload: dict, *, xid: str) -> None:
    services.fund_debit_freeze(move=FundMove.from_payload(payload), xid=xid)


def debit_confirm(payload: dict, *, xid: str) -> None:
    services.fund_debit_post(move=FundMove.from_payload(payload), xid=xid)


def debit_cancel(payload: dict, *, xid: str) -> None:
    services.fund_debit_unfreeze(move=FundMove.from_payload(payload), xid=xid)


def award_try(payload: dict, *, xid: str) -> None:
    services.points_award_hold(award=PointsAward.from_payload(payload), xid=xid)


def award_confirm(payload: dict, *, xid: str) -> None:
    services.points_award_post(award=PointsAward.from_payload(payload), xid=xid)


def award_cancel(payload: dict, *, xid: str) -> None:
    services.points_award_release(award=PointsAward.from_payload(payload), xid=xid)


# action name -> (alias = queue, try, confirm, cancel)
ACTIONS = {
    "funds.credit": ("funds", credit_try, credit_confirm, credit_cancel),
    "funds.debit": ("funds", debit_try, debit_confirm, debit_cancel),
    "points.award": ("points", award_try, award_confirm, award_cancel),
}


def register() -> None:
    from paysys import tcc

    for action, (alias, try_, confirm, cancel) in ACTIONS.items():
        tcc.participant(action, alias=alias, queue=alias, try_=try_, confirm=confirm, cancel=cancel)
