from paysys.contracts import BankPaymentSucceeded
from paysys.messaging import consumer
from orders.services import bank_payment_apply


@consumer(BankPaymentSucceeded.TOPIC, queue="orders")
def apply_bank_payment(message) -> None:
    event = BankPaymentSucceeded.from_payload(message.payload)
    bank_payment_apply(
        out_trade_no=event.out_trade_no, bank_trade_no=event.bank_trade_no, amount=event.amount,
        currency=event.currency, paid_at=event.paid_at, source=event.source,
    )
