"""The bank simulator's admin: read-only payments filtered by notify state, one-click retry."""

import pytest

from paysys.sandbox.models import BankPayment
from tests.sandbox.conftest import pay

pytestmark = pytest.mark.django_db(databases="__all__")

CHANGELIST = "/admin/sandbox/bankpayment/"


@pytest.mark.parametrize("state", ["ACKED", "PENDING", "HELD", "GAVE_UP"])
def test_changelist_filters_by_notify_state(admin_client, make_order, state):
    held, pending = make_order(), make_order()
    pay(held, {"hold": True})
    pay(pending)
    BankPayment.objects.filter(out_trade_no=pending.out_trade_no).update(notify_state=state)

    response = admin_client.get(CHANGELIST, {"notify_state__exact": state})

    assert response.status_code == 200
    shown = {p.out_trade_no for p in response.context["cl"].result_list}
    expected = {pending.out_trade_no} | ({held.out_trade_no} if state == "HELD" else set())
    assert shown == expected


def test_payment_page_is_read_only_with_its_attempts(admin_client, order):
    pay(order)
    payment = BankPayment.objects.get()

    response = admin_client.get(f"{CHANGELIST}{payment.pk}/change/")

    assert response.status_code == 200
    assert payment.bank_trade_no.encode() in response.content
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


def test_retry_action_reschedules_only_notifies_that_gave_up(admin_client, make_order):
    gave_up, acked = make_order(), make_order()
    pay(gave_up)
    pay(acked)
    BankPayment.objects.filter(out_trade_no=gave_up.out_trade_no).update(
        notify_state="GAVE_UP", notify_attempts=10, next_attempt_at=None
    )
    BankPayment.objects.filter(out_trade_no=acked.out_trade_no).update(
        notify_state="ACKED", next_attempt_at=None
    )

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "retry_notify",
            "_selected_action": list(BankPayment.objects.values_list("pk", flat=True)),
        },
    )

    assert response.status_code == 302
    retried = BankPayment.objects.get(out_trade_no=gave_up.out_trade_no)
    assert (retried.notify_state, retried.notify_attempts) == ("PENDING", 0)
    assert retried.next_attempt_at is not None
    assert BankPayment.objects.get(out_trade_no=acked.out_trade_no).notify_state == "ACKED"
