from orders.services import BankPayment, bank_payments_apply
from paysys.contracts import BankPaymentSucceeded
from paysys.messaging import consumer


# not atomic: the TCC's tries and decision commit on their own (tcc.run_many refuses an open
# transaction). A relay batch of payments is one tcc.run_many. Each payment is acknowledged once
# it is FLAGGED or its confirm decision is committed; a cancelled TCC is an error, so its message
# stays SENDING and is resent, and the next attempt (same business key, the bank trade number)
# completes it.
@consumer(BankPaymentSucceeded.TOPIC, queue="orders", atomic=False, batch=True)
def apply_bank_payment(deliveries) -> dict[int, Exception]:
    errors: dict[int, Exception] = {}
    payments: dict[int, BankPayment] = {}
    for delivery in deliveries:
        try:
            event = BankPaymentSucceeded.from_payload(delivery.payload)
        except Exception as exc:  # noqa: BLE001 - this message's error, the others go on
            errors[delivery.id] = exc
            continue
        payments[delivery.id] = BankPayment(event.out_trade_no, event.bank_trade_no, event.amount, event.currency,
                                            event.paid_at, event.source)
    for delivery_id, result in zip(payments, bank_payments_apply(list(payments.values()))):
        if isinstance(result, Exception):
            errors[delivery_id] = result
    return errors
