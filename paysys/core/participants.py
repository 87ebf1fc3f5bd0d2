"""Core as a TCC participant: ``core.agreement``, the payer's agreement in a balance payment.

    try      count the payment against the agreement, under its row lock: refused (Forbidden)
             when the agreement was revoked or its token reissued since the payment was
             authorised, or the payment would pass a limit (the day's total is one conditional
             UPDATE, so payments racing with one agreement never pass its daily limit together)
    confirm  nothing: the payment stays counted (declared ``None``: phase two marks the branch
             confirmed without a transaction here)
    cancel   uncount it

It is the first branch of a balance payment (:func:`orders.payments.pay_branches`): a refused
agreement stops the transaction before the order is held or the wallet frozen. The framework
runs every op in ``atomic(using="default")`` with its barrier row, so duplicates, empty cancels
and late tries never reach this code.
"""

from __future__ import annotations

from paysys import tcc
from paysys.contracts import AgreementCharge
from paysys.core import services
from paysys.core.models import PayerAgreement, PayerAgreementDay

ACTION = AgreementCharge.ACTION


def agreement_branch(
    agreement: PayerAgreement, *, amount: int, currency: str, out_trade_no: str
) -> tcc.Branch:
    """The branch that counts a payment of ``amount`` against ``agreement`` today."""
    charge = AgreementCharge(
        agreement_id=agreement.pk,
        token_prefix=agreement.token_prefix,
        payer_id=agreement.payer_id,
        merchant_id=agreement.merchant_id,
        amount=amount,
        currency=currency,
        day=PayerAgreementDay.today().isoformat(),
        out_trade_no=out_trade_no,
    )
    return tcc.Branch(ACTION, charge.to_payload())


def charge_try(payload: dict, *, xid: str) -> None:
    services.agreement_charge_hold(charge=AgreementCharge.from_payload(payload))


def charge_cancel(payload: dict, *, xid: str) -> None:
    services.agreement_charge_release(charge=AgreementCharge.from_payload(payload))


def register() -> None:
    tcc.participant(
        ACTION,
        alias="default",
        queue="core",
        try_=charge_try,
        confirm=None,  # counted by the try already
        cancel=charge_cancel,
    )
