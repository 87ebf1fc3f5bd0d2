from orders.services import bank_payment_apply
from paysys.contracts import BankPaymentSucceeded
from paysys.messaging import consumer


# not atomic: the TCC's tries and decision commit on their own (tcc.run refuses an open
# transaction). Acknowledged once the payment is FLAGGED or its confirm decision is committed;
# a cancelled TCC raises, so the message stays SENDING with the error and is resent, and the next
# attempt (same business key, the bank trade number) completes it.
@consumer(BankPaymentSucceeded.TOPIC, queue="orders", atomic=False)
def apply_bank_payment(message) -> None:
    event = BankPaymentSucceeded.from_payload(message.payload)
    bank_payment_apply(
        out_trade_no=event.out_trade_no, bank_trade_no=event.bank_trade_no, amount=event.amount,
        currency=event.currency, paid_at=event.paid_at, source=event.source,
    )
