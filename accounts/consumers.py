"""What funds and points learn from orders: a bank refund's answer (``refund.finished`` with
``held``), to post or release the holds its TCC left (accounts.participants, "refunds")."""

from accounts import services
from paysys.contracts import FundMove, PointsAward, RefundFinished
from paysys.messaging import consumer


@consumer(RefundFinished.TOPIC, queue="funds", name="funds.refund_settle")
def settle_refund_funds(message) -> None:
    """Runs in ``atomic(using="funds")`` with the inbox row: once per message."""
    event = RefundFinished.from_payload(message.payload)
    if not event.held:
        return  # posted by its TCC's confirm already
    move = FundMove(
        owner_type="merchant",
        owner_id=event.merchant_id,
        amount=event.amount,
        currency=event.currency,
        out_trade_no=event.out_trade_no,
        reason=f"refund {event.refund_no}",
    )
    if event.status == "SUCCEEDED":
        services.fund_debit_post(moves=[(event.xid, move)])
    else:
        services.fund_debit_unfreeze(moves=[(event.xid, move)])


@consumer(RefundFinished.TOPIC, queue="points", name="points.refund_settle")
def settle_refund_points(message) -> None:
    event = RefundFinished.from_payload(message.payload)
    if not event.held or not event.points:
        return
    award = PointsAward(
        payer_id=event.payer_id, points=event.points, out_trade_no=event.out_trade_no
    )
    if event.status == "SUCCEEDED":
        services.points_reverse_post(award=award, xid=event.xid)
    else:
        services.points_reverse_release(award=award, xid=event.xid)
