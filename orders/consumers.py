from paysys.messaging.registry import consumer
from orders.services import bank_payment_apply


@consumer("bank.payment_succeeded", queue="orders")
def apply_bank_payment(message) -> None:
    p = message.payload
    bank_payment_apply(
        out_trade_no=p["out_trade_no"], bank_trade_no=p["bank_trade_no"], amount=p["amount"],
        currency=p["currency"], paid_at=p["paid_at"], source=p.get("source", "notify"),
    )
