"""Admin as an operator reads it: times to the second, a DEAD message's last error, ids as links."""

import re

import pytest

from paysys.messaging.models import Message
from paysys.tcc.models import GlobalTransaction
from tests.messaging.helpers import force_status

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def test_admin_lists_show_times_to_the_second(staff_client, paid_at_bank):
    page = staff_client.get("/admin/orders/order/").content.decode()

    assert re.search(
        r"<td class=\"field-created_at[^\"]*\">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", page
    ), page[-3000:]


def test_a_dead_message_shows_why_it_died(staff_client, paid_at_bank, settings):
    from paysys.messaging import relay

    # given: order.paid to accounting was sent as often as the schedule allows, and nobody answered
    settings.MESSAGE_RESEND_SCHEDULE = [0]
    rows = Message.objects.using("orders").filter(
        business_key=paid_at_bank.out_trade_no, queue="accounting"
    )
    force_status(rows, "SENDING", send_count=1, last_error="")
    Message.objects.using("orders").filter(pk__in=[r.pk for r in rows]).update(
        next_send_at=paid_at_bank.created_at
    )
    relay.relay_due("orders")

    row = Message.objects.using("orders").get(
        business_key=paid_at_bank.out_trade_no, queue="accounting"
    )
    page = staff_client.get(
        f"/admin/messaging/message/{row.pk}/change/?_changelist_filters=service%3Dorders"
    ).content.decode()

    assert row.status == "DEAD"
    assert "no consumer answered (is its queue&#x27;s worker running?)" in page


def test_ids_link_to_their_objects(staff_client, paid_at_bank):
    gtx = GlobalTransaction.objects.get(business_key=f"bank:{paid_at_bank.bank_trade_no}")

    tcc_list = staff_client.get("/admin/tcc/globaltransaction/").content.decode()
    orders_list = staff_client.get("/admin/orders/order/").content.decode()

    assert (
        f'href="/admin/trace/?q=bank%3A{paid_at_bank.bank_trade_no}">bank:{paid_at_bank.bank_trade_no}</a>'
        in tcc_list
    )
    assert (
        f'href="/admin/core/merchant/{paid_at_bank.merchant_id}/change/">{paid_at_bank.merchant_id}</a>'
        in orders_list
    )
    assert gtx.xid in tcc_list
