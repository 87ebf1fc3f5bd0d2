"""The operator's pages: /healthz/detail, the admin overview and one payment's trace."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from notifications.models import Notification
from paysys.core import heartbeats
from paysys.messaging.models import Message
from paysys.tcc.models import GlobalTransaction

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


# --- /healthz/detail ---------------------------------------------------------------------------


def test_healthz_detail_reports_every_worker_alive_and_the_broker(staff_client, every_worker_alive):
    response = staff_client.get("/healthz/detail")

    assert response.status_code == 200, response.content
    detail = response.json()
    assert detail["status"] == "ok" and detail["broker"] == "ok" and detail["beat"]["alive"]
    assert detail["services"]["accounting"]["workers"]["accounting"]["alive"] is True
    assert set(detail["services"]["orders"]["workers"]) == {"orders", "polling"}
    assert set(detail["databases"]) == {
        "default",
        "orders",
        "funds",
        "points",
        "accounting",
        "notifications",
        "sandbox",
    }


def test_healthz_detail_reports_a_dead_worker_dead_with_its_last_heartbeat(
    staff_client, every_worker_alive
):
    # given: the funds worker stopped writing its heartbeat a minute ago (killed)
    heartbeats.record(["funds"], now=time.time() - 60)

    response = staff_client.get("/healthz/detail")

    assert response.status_code == 503
    funds = response.json()["services"]["funds"]["workers"]["funds"]
    assert funds["alive"] is False and funds["last_seen"] is not None
    assert response.json()["services"]["points"]["workers"]["points"]["alive"] is True


def test_healthz_detail_shows_the_oldest_pending_work_per_service(
    staff_client, every_worker_alive, paid_at_bank
):
    # given: the order.paid message to accounting is still waiting, and a TCC confirm is unfinished
    Message.objects.using("orders").filter(
        business_key=paid_at_bank.out_trade_no, queue="accounting"
    ).update(consumed_at=None, next_send_at=None)
    from tests.messaging.helpers import force_status

    force_status(
        Message.objects.using("orders").filter(
            business_key=paid_at_bank.out_trade_no, queue="accounting"
        ),
        "SENDING",
    )

    detail = staff_client.get("/healthz/detail").json()

    assert detail["services"]["accounting"]["messages_pending"] == 1
    assert detail["services"]["accounting"]["oldest_message_seconds"] >= 0
    assert detail["services"]["notifications"]["messages_pending"] == 0
    assert detail["notifications"]["pending"] >= 0


@pytest.mark.parametrize(
    "authorization, status", [(None, 401), ("Bearer wrong", 401), ("Bearer " + "m" * 40, 200)]
)
def test_healthz_detail_needs_staff_or_the_metrics_token(
    settings, every_worker_alive, authorization, status
):
    settings.METRICS_TOKEN = "m" * 40
    headers = {"Authorization": authorization} if authorization else {}

    assert Client().get("/healthz/detail", headers=headers).status_code == status


def test_healthz_detail_is_off_for_everyone_but_staff_without_a_metrics_token(
    settings, staff_client, every_worker_alive
):
    settings.METRICS_TOKEN = ""
    user = get_user_model().objects.create_user("not-staff", password="pw-ops-2")
    member = Client()
    member.force_login(user)

    assert Client().get("/healthz/detail").status_code == 404
    assert member.get("/healthz/detail").status_code == 404
    assert staff_client.get("/healthz/detail").status_code == 200


# --- the overview --------------------------------------------------------------------------------


def test_the_admin_index_links_the_overview_and_the_trace(staff_client):
    page = staff_client.get("/admin/").content.decode()

    assert 'href="/admin/overview/"' in page and 'action="/admin/trace/"' in page


def test_the_overview_shows_dead_workers_dead_messages_and_tcc_needing_a_human(
    staff_client, every_worker_alive, paid_at_bank
):
    # given: the accounting worker is dead, its order.paid message DEAD, a TCC transaction flagged
    heartbeats.record(["accounting"], now=time.time() - 120)
    from tests.messaging.helpers import force_status

    force_status(
        Message.objects.using("orders").filter(
            business_key=paid_at_bank.out_trade_no, queue="accounting"
        ),
        "DEAD",
        last_error="boom",
    )
    GlobalTransaction.objects.update(needs_human=True)

    response = staff_client.get("/admin/overview/")

    assert response.status_code == 200
    page = response.content.decode()
    accounting = page[
        page.index('id="service-accounting"') : page.index('id="service-notifications"')
    ]
    assert 'accounting: <span class="bad">dead</span>' in accounting
    assert (
        '/admin/messaging/message/?service=orders&amp;queue=accounting&amp;dead=yes" class="bad">1</a>'
        in accounting
    )
    needs_human = page[page.index('id="needs-human"') : page.index('id="notify-rate"')]
    assert '/admin/tcc/globaltransaction/?needs_human__exact=1" class="bad">1</a>' in needs_human
    assert (
        "0.0 %" in page and "(0 of 1 attempts succeeded)" in page
    )  # the one failed notify attempt
    charts = page[page.index('id="charts"') :]
    assert charts.count('<figure class="chart">') == 3 and "<script" not in charts
    assert "Degraded" in page


def test_every_number_of_the_overview_links_to_a_list_that_opens(
    staff_client, every_worker_alive, paid_at_bank
):
    import re

    from tests.messaging.helpers import force_status

    messages = Message.objects.using("orders").filter(business_key=paid_at_bank.out_trade_no)
    force_status(messages.filter(queue="accounting"), "DEAD")
    force_status(messages.filter(queue="notifications"), "SENDING")
    force_status(GlobalTransaction.objects, status="CONFIRMING")
    from paysys.tcc.models import TransactionBranch

    force_status(TransactionBranch.objects, status="PENDING")
    page = staff_client.get("/admin/overview/").content.decode()

    links = set(re.findall(r'href="(/admin/[a-z]+/[a-z]+/\?[^"]+)"', page))
    assert any("dead=yes" in link for link in links) and any(
        "status__in=PREPARED" in link for link in links
    )
    assert any("status__in=CONFIRMING" in link for link in links), links
    for link in links:
        response = staff_client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
        assert "?e=1" not in response.get("Location", ""), (
            link
        )  # the admin's "invalid lookup" redirect


def test_the_overview_shows_the_latest_reconcile_report(staff_client, every_worker_alive):
    from django.utils import timezone

    from paysys.reconcile.models import ReconcileReport

    now = timezone.now()
    ReconcileReport.objects.create(started_at=now, finished_at=now, ok=False, inconsistencies=3)

    page = staff_client.get("/admin/overview/").content.decode()

    assert "3 inconsistencies" in page[page.index('id="reconcile"') :]


@pytest.mark.parametrize("path", ["/admin/overview/", "/admin/trace/?q=x"])
def test_the_operator_pages_are_for_staff_only(path, db):
    assert Client().get(path).status_code == 302  # to the login page
    user = get_user_model().objects.create_user("member", password="pw-ops-3")
    member = Client()
    member.force_login(user)
    response = member.get(path)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_without_view_permissions_get_no_trace_and_no_reconcile_verdict(
    db, every_worker_alive, paid_at_bank
):
    """The trace shows any merchant's payment: it needs ``orders.view_order``; the overview shows the
    latest reconcile verdict only to who may view the reports."""
    from paysys.reconcile.models import ReconcileReport

    ReconcileReport.objects.create(
        started_at=timezone.now(), finished_at=timezone.now(), ok=False, inconsistencies=3
    )
    staff = Client()
    staff.force_login(
        get_user_model().objects.create_user("plain-staff", password="pw-ops-4", is_staff=True)
    )
    assert staff.get("/admin/trace/", {"q": paid_at_bank.out_trade_no}).status_code == 403
    assert staff.get("/admin/trace/", {"q": "a:" * 60}).status_code == 403
    overview = staff.get("/admin/overview/").content.decode()
    assert "3 inconsistencies" not in overview and "not shown" in overview


def test_a_query_of_many_colons_costs_two_lookups_not_one_per_colon(
    staff_client, paid_at_bank, django_assert_max_num_queries
):
    with django_assert_max_num_queries(40):
        page = trace_page(staff_client, "a:" * 60)
    assert "a:a:" in page  # the query is shown back, with nothing found


# --- the trace ----------------------------------------------------------------------------------


def trace_page(client, q: str) -> str:
    response = client.get("/admin/trace/", {"q": q})
    assert response.status_code == 200
    return response.content.decode()


def test_the_trace_shows_every_step_of_a_bank_payment_with_links(staff_client, paid_at_bank):
    page = trace_page(staff_client, paid_at_bank.out_trade_no)

    for step in (
        "order created",
        "bank notify received",
        "bank notify stored",
        "bank payment APPLIED",
        "message bank.payment_succeeded → orders.",
        "consumed by",
        "TCC complete_order attempt 1 begun",
        "branch funds.credit CONFIRMED",
        "branch points.award CONFIRMED",
        "TCC CONFIRMED",
        "payer paid (bank, paid_at)",
        "message order.paid → accounting",
        "voucher booked",
        "merchant notification order.paid",
        "notify attempt 1: failed",
    ):
        assert step in page, step
    for admin_list in (
        "/admin/orders/order/",
        "/admin/gateway/banknotify/",
        "/admin/messaging/message/",
        "/admin/tcc/globaltransaction/",
        "/admin/accounting/voucher/",
        "/admin/notifications/notification/",
    ):
        assert f'href="{admin_list}' in page, admin_list


def test_the_trace_finds_the_payment_by_any_of_its_ids(staff_client, paid_at_bank):
    notification = Notification.objects.using("notifications").get(order_id=paid_at_bank.pk)
    gtx = GlobalTransaction.objects.get(business_key=f"bank:{paid_at_bank.bank_trade_no}")

    for q in (
        paid_at_bank.merchant_order_no,
        paid_at_bank.bank_trade_no,
        gtx.xid,
        notification.webhook_id,
        f" {paid_at_bank.out_trade_no} ",
    ):
        page = trace_page(staff_client, q)
        assert f'id="trace-{paid_at_bank.out_trade_no}"' in page, q
        assert "voucher booked" in page, q


def test_the_trace_says_when_nothing_matches(staff_client, paid_at_bank):
    page = trace_page(staff_client, "no-such-id")

    assert 'id="trace-none"' in page and "voucher booked" not in page


# --- logs -----------------------------------------------------------------------------------------


def test_each_business_step_of_a_payment_is_one_info_line_with_its_out_trade_no(
    caplog, merchant, payer
):
    import logging

    from tests.ops.conftest import pay_at_bank

    with caplog.at_level(logging.INFO):
        order = pay_at_bank(merchant, payer)

    steps = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and order.out_trade_no in r.getMessage()
    ]
    for step in (
        "paid (bank)",
        f"merchant {order.merchant_id} credited",
        f"payer {payer.pk} awarded",
        "voucher booked",
    ):
        assert len([line for line in steps if step in line]) == 1, (step, steps)


def test_a_database_that_does_not_answer_is_said_on_the_page_not_a_500(
    staff_client, every_worker_alive, paid_at_bank, monkeypatch
):
    from django.db import OperationalError, connections

    def refused(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["accounting"], "cursor", refused)

    trace = trace_page(staff_client, paid_at_bank.out_trade_no)
    overview = staff_client.get("/admin/overview/")

    assert (
        "accounting: database unavailable (OperationalError)" in trace and "order created" in trace
    )
    assert overview.status_code == 200
    assert "down: OperationalError" in overview.content.decode()
