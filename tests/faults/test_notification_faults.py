"""Merchant notification under real faults: the delivery worker's pool process SIGKILLed while a
request is in flight. The claim's lease expires and a later pass delivers the notification,
with the same webhook-id (so the merchant can deduplicate the first, unanswered one)."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from notifications.models import Notification
from notifications.tasks import deliver_due
from tests.faults.harness import Worker, service_env, wait_for
from tests.notifications.conftest import notify, receiver  # noqa: F401 - fixtures
from tests.notifications.receiver import Behaviour

pytestmark = [pytest.mark.fault, pytest.mark.django_db(databases="__all__", transaction=True)]


@pytest.fixture
def delivery_worker(broker_url, tmp_path):
    # a short total timeout and lease so the expiry is observable within the test
    env = service_env(broker_url, NOTIFY_TOTAL_TIMEOUT="4", NOTIFY_CLAIM_LEASE="5")
    worker = Worker("notify-delivery", "notify_delivery", env, tmp_path).start()
    yield worker
    worker.stop()


def test_delivery_worker_killed_mid_request_delivers_later_with_the_same_webhook_id(
    delivery_worker, merchant, notify, receiver
):
    receiver.answer("/notify", Behaviour(hang=True), Behaviour(status=200))
    record = notify(merchant)  # the kick after commit starts a pass in the worker
    deliver_due.apply_async()  # (and in case the kick was coalesced away)
    wait_for(
        lambda: len(receiver.requests()) == 1, timeout=20, what="the first request to be in flight"
    )

    delivery_worker.kill_child()

    record.refresh_from_db()
    assert (record.status, record.attempt_count) == (Notification.Status.PENDING, 0)
    assert record.next_attempt_at is not None  # leased: due again when the lease expires

    def delivered() -> bool:
        deliver_due.apply_async()  # what beat does every second
        return Notification.objects.get(pk=record.pk).status == Notification.Status.SUCCEEDED

    wait_for(
        delivered, timeout=40, interval=1, what=f"redelivery (log: {delivery_worker.log_path})"
    )
    first, second = receiver.requests()[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == record.webhook_id
    assert (
        Webhook(merchant.webhook_secret).verify(second.body, second.headers)["type"] == "order.paid"
    )
    record.refresh_from_db()
    assert record.attempts.filter(outcome="succeeded").count() == 1
