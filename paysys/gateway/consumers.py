"""The gateway's side of the message service: it consumes nothing, but answers check-backs."""

from paysys.gateway.models import BankNotify
from paysys.messaging import check_back


@check_back("gateway.bank_notify_stored")
def bank_notify_stored(bank_trade_no: str) -> bool:
    """A two-phase ``bank.payment_succeeded`` is real iff its notify was stored."""
    return BankNotify.objects.filter(bank_trade_no=bank_trade_no).exists()
