from __future__ import annotations

from paysys.sandbox.models import BankPayment


def bank_payment_get(*, out_trade_no: str) -> BankPayment | None:
    return BankPayment.objects.filter(out_trade_no=out_trade_no).first()
