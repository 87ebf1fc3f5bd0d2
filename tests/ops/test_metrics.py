"""GET /metrics (paysys/ops/metrics.py): every framework's and service's own collector in one
exposition, for the bearer of METRICS_TOKEN only. Each collector's figures are tested beside its
module (tests/messaging/test_metrics.py, tests/tcc/test_admin_metrics.py,
tests/notifications/test_metrics.py)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from paysys.messaging.models import Message

pytestmark = [pytest.mark.django_db(databases="__all__")]

METRICS_TOKEN = "metrics-token-for-the-tests-0123456789"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN


def test_one_scrape_has_the_outbox_then_tcc_then_notifications(client):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = [f.name for f in text_string_to_metric_families(response.content.decode())]
    assert families == [
        "paysys_messages",
        "paysys_messages_dead",
        "paysys_message_oldest_pending_seconds",
        "paysys_message_resends",
        "paysys_database_up",
        "paysys_tcc_transactions",
        "paysys_tcc_needs_human",
        "paysys_tcc_phase_two_lag_seconds",
        "paysys_tcc_oldest_trying_seconds",
        "paysys_notify_attempts_last_minute",
        "paysys_notify_due",
        "paysys_notify_oldest_due_seconds",
        "paysys_notify_pending",
        "paysys_notify_endpoints_disabled",
        "paysys_notify_endpoints_failing",
    ]


def test_metrics_is_read_only(client):
    response = client.post("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert response.status_code == 405


# --- issue 6: not public ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"]
)
def test_metrics_needs_the_token(client, header):
    Message.objects.using("orders").create(
        topic="test.metrics",
        consumer="accounting.test_metrics",
        queue="accounting",
        payload={},
        status=Message.Status.DEAD,
    )

    response = client.get("/metrics", headers={"Authorization": header} if header else {})

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"paysys_messages" not in response.content


def test_metrics_is_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics", headers={"Authorization": "Bearer "})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
