"""Admin (transactions with branches inline, filters, "Retry phase two now") and /metrics."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Permission
from prometheus_client.parser import text_string_to_metric_families

from paysys import tcc
from paysys.tcc import phase_two
from paysys.tcc.models import GlobalTransaction
from tests.messaging.test_metrics import METRICS_TOKEN, metrics_token  # noqa: F401 - metrics_token is autouse
from tests.phase_two import run_phase_two

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

CHANGELIST = "/admin/tcc/globaltransaction/"
_keys = itertools.count(1)
BRANCHES = [tcc.Branch("test.orders", {"amount": 1}), tcc.Branch("test.funds", {"amount": 994})]


def run(**kw) -> str:
    return tcc.run(
        "complete_order", business_key=f"adm:{next(_keys)}:{id(run)}", branches=BRANCHES
    ).xid


@pytest.fixture
def flagged(ledgers, dispatched):  # phase two lost
    xid = run()
    GlobalTransaction.objects.filter(xid=xid).update(
        needs_human=True, next_retry_at=None, attempts=9
    )
    return GlobalTransaction.objects.get(xid=xid)


def test_changelist_filters_and_detail_with_branches(admin_client, flagged):
    for query in (
        "",
        "?status__exact=CONFIRMING",
        "?needs_human__exact=1",
        "?name=complete_order",
        "?older_than=1h",
    ):
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200, query
    assert flagged.xid in admin_client.get(CHANGELIST + "?needs_human__exact=1").content.decode()
    assert flagged.xid not in admin_client.get(CHANGELIST + "?older_than=1h").content.decode()
    detail = admin_client.get(f"{CHANGELIST}{flagged.pk}/change/").content.decode()
    assert "test.funds" in detail and "test.orders" in detail and "994" in detail


def test_retry_phase_two_now_clears_the_flag_and_sends(admin_client, flagged, monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(phase_two, "resend", sent.extend)
    response = admin_client.post(
        CHANGELIST, {"action": "retry_phase_two_now", "_selected_action": [flagged.pk]}, follow=True
    )
    assert "sent again for 1 transaction" in response.content.decode()
    flagged.refresh_from_db()
    assert not flagged.needs_human and flagged.attempts == 0
    assert sorted(i["op"] for i in sent) == ["confirm", "confirm"]


def test_viewers_cannot_retry(client, django_user_model, flagged):
    user = django_user_model.objects.create_user("tcc-viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_globaltransaction"))
    client.force_login(user)
    page = client.get(CHANGELIST).content.decode()
    assert flagged.xid in page and "retry_phase_two_now" not in page


def test_metrics_count_by_status_lag_and_needs_human(client, flagged):
    run_phase_two([run()])
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
    label = (("name", "complete_order"),)
    assert samples[("paysys_tcc_transactions", label + (("status", "CONFIRMING"),))] >= 1
    assert (
        "paysys_tcc_transactions",
        label + (("status", "CONFIRMED"),),
    ) not in samples  # history: not per scrape
    assert samples[("paysys_tcc_needs_human", label)] >= 1
    assert samples[("paysys_tcc_phase_two_lag_seconds", ())] >= 0
    assert (
        "paysys_messages_dead",
        (),
    ) not in samples  # the outbox families are still there, untouched
    assert any(name == "paysys_database_up" for name, _ in samples)


def test_an_idle_coordinator_reads_zero_for_every_transaction_name_not_no_data(client):
    # given: no TCC transaction at all (a healthy, idle system)
    assert not GlobalTransaction.objects.exists()

    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    # then: each declared transaction name is there, at 0, so sum() is 0 and absent() is false
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
    for name in (
        "complete_order",
        "pay_order_balance",
    ):  # what orders declares (OrdersConfig.ready)
        for status in ("TRYING", "CONFIRMING", "CANCELLING"):
            assert samples[("paysys_tcc_transactions", (("name", name), ("status", status)))] == 0
        assert samples[("paysys_tcc_needs_human", (("name", name),))] == 0
