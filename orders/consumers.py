from orders import refund_bank  # noqa: F401  registers orders.send_refund (refund.requested)
from orders.payments import BankPayment, bank_payments_apply
from orders.polling import orders_postpone_polling
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
        payments[delivery.id] = BankPayment(
            event.out_trade_no,
            event.bank_trade_no,
            event.amount,
            event.currency,
            event.paid_at,
            event.source,
        )
    for delivery_id, result in zip(
        payments, bank_payments_apply(list(payments.values())), strict=False
    ):
        if isinstance(result, Exception):
            errors[delivery_id] = result
    return errors


# Order polling must not ask the bank about an order whose notify is stored and on its way
# (issue 16: a backlog of notifies made polling ask about every one of them, again and again).
# How orders learns it, within its own database: it subscribes to the same message a second
# time, on its ``polling`` queue. The gateway's one outbox INSERT then carries a row for each
# consumer; this one reaches the polling worker even while payments queue up behind the orders
# worker (that backlog is exactly when it matters), and postpones the orders' polls by the
# message's resend window. Reading the gateway's tables or outbox from orders would tie orders
# to core's database; marking the order when the payment consumer takes the message would come
# only after the queue's wait. Idempotent by itself (it only moves a time later).
@consumer(
    BankPaymentSucceeded.TOPIC,
    queue="polling",
    alias="orders",
    name="orders.postpone_polling",
    atomic=False,
    batch=True,
)
def postpone_polling(deliveries) -> dict[int, Exception]:
    errors: dict[int, Exception] = {}
    outs: list[str] = []
    for delivery in deliveries:
        try:
            outs.append(BankPaymentSucceeded.from_payload(delivery.payload).out_trade_no)
        except Exception as exc:  # noqa: BLE001 - this message's error, the others go on
            errors[delivery.id] = exc
    if outs:
        orders_postpone_polling(out_trade_nos=outs)
    return errors
