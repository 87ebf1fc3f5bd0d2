import pytest
from django.db import transaction

from accounting.models import Voucher, VoucherLine
from accounting.selectors import trial_balance
from paysys.contracts import OrderPaid
from paysys.messaging import publish
from paysys.messaging.consumption import consume_batch
from paysys.messaging.models import InboxEntry, Message
from tests.accounting.factories import deliveries_for, order_paid_payload
from tests.messaging.helpers import Raw

pytestmark = pytest.mark.django_db(databases="__all__")

CONSUMER = "accounting.book_order_paid"


def publish_order_paid(payload: dict) -> None:
    # orders publishes order.paid in its own transaction; the relay kick after commit goes to
    # the in-memory test broker and is irrelevant here: the test delivers in-process
    with transaction.atomic(using="orders"):
        publish(Raw(OrderPaid.TOPIC, payload), using="orders")


def test_order_paid_message_is_booked_once_however_often_it_is_delivered():
    payload = order_paid_payload(amount=1234, fee_rate_bp=60)
    publish_order_paid(payload)
    deliveries = deliveries_for("orders", consumer=CONSUMER)
    assert len(deliveries) == 1

    first = consume_batch("orders", deliveries)
    second = consume_batch("orders", deliveries)  # a redelivery (lost ack, recovery resend)

    assert first == second == {"acked": [deliveries[0]["id"]], "failed": []}
    voucher = Voucher.objects.using("accounting").get()
    assert voucher.source == f"{OrderPaid.TOPIC}:{payload['out_trade_no']}"
    assert str(voucher.message_id) == deliveries[0]["message_id"]
    assert sorted(
        VoucherLine.objects.using("accounting").values_list("account__code", "debit", "credit")
    ) == [
        ("1002", 1234, 0),
        ("2202", 0, 1227),
        ("6001", 0, 7),
    ]
    assert InboxEntry.objects.using("accounting").filter(consumer=CONSUMER).count() == 1
    assert Message.objects.using("orders").get(consumer=CONSUMER).status == Message.Status.CONSUMED
    tb = trial_balance()
    assert tb.total_debit == tb.total_credit == 1234


def test_a_bad_order_paid_message_books_nothing_and_stays_for_a_human():
    publish_order_paid(order_paid_payload(amount=1000, fee=2000))
    deliveries = deliveries_for("orders", consumer=CONSUMER)

    result = consume_batch("orders", deliveries)

    assert result == {"acked": [], "failed": [deliveries[0]["id"]]}
    assert not Voucher.objects.using("accounting").exists()
    assert not InboxEntry.objects.using("accounting").filter(consumer=CONSUMER).exists()
    message = Message.objects.using("orders").get(consumer=CONSUMER)
    assert message.status == Message.Status.SENDING
    assert "InvalidVoucher" in message.last_error


def test_wallet_credited_message_is_booked_once_crediting_payer_wallets():
    from tests.accounting.factories import wallet_credited_payload

    payload = wallet_credited_payload(amount=30_000)
    with transaction.atomic(using="funds"):  # funds publishes it when a wallet is credited by hand
        publish(Raw("wallet.credited", payload), using="funds")
    deliveries = deliveries_for("funds", consumer="accounting.book_wallet_credited")
    assert len(deliveries) == 1

    consume_batch("funds", deliveries)
    consume_batch("funds", deliveries)  # redelivered

    voucher = Voucher.objects.using("accounting").get()
    assert voucher.source == f"wallet.credited:{payload['entry_id']}"
    assert sorted(
        VoucherLine.objects.using("accounting").values_list("account__code", "debit", "credit")
    ) == [
        ("1002", 30_000, 0),
        ("2241", 0, 30_000),
    ]
    assert Message.objects.using("funds").get().status == Message.Status.CONSUMED


def test_a_batch_books_every_voucher_in_one_call_and_a_bad_or_duplicate_one_apart():
    good = [order_paid_payload(amount=1000 + n, fee_rate_bp=60) for n in range(3)]
    bad = order_paid_payload(amount=1000, fee=2000)  # a fee larger than the amount
    replayed = dict(
        good[0]
    )  # another message for an order booked in this batch (a producer replay)
    for payload in (*good, bad, replayed):
        publish_order_paid(payload)
    deliveries = deliveries_for("orders", consumer=CONSUMER)

    result = consume_batch("orders", deliveries)

    bad_id = next(
        d["id"] for d in deliveries if d["payload"]["out_trade_no"] == bad["out_trade_no"]
    )
    assert result["failed"] == [bad_id] and len(result["acked"]) == 4
    booked = sorted(Voucher.objects.using("accounting").values_list("source", flat=True))
    assert booked == sorted(f"{OrderPaid.TOPIC}:{p['out_trade_no']}" for p in good)
    tb = trial_balance()
    assert tb.total_debit == tb.total_credit == sum(p["amount"] for p in good)
    assert InboxEntry.objects.using("accounting").filter(consumer=CONSUMER).count() == 4


def test_a_batch_takes_a_constant_number_of_statements():
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    def statements(n: int) -> int:
        Message.objects.using("orders").all().delete()
        for _ in range(n):
            publish_order_paid(order_paid_payload(amount=500, fee_rate_bp=60))
        with CaptureQueriesContext(connections["accounting"]) as queries:
            assert (
                len(consume_batch("orders", deliveries_for("orders", consumer=CONSUMER))["acked"])
                == n
            )
        return len(queries)

    assert statements(20) == statements(3)
