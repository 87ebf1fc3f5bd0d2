import pytest

from paysys.contracts import BankPaymentSucceeded
from paysys.gateway import services
from paysys.messaging.models import Message


def published() -> int:
    """bank.payment_succeeded messages in the gateway's outbox (one per payment, whatever the consumers)."""
    return (
        Message.objects.using("default")
        .filter(topic=BankPaymentSucceeded.TOPIC)
        .values("message_id")
        .distinct()
        .count()
    )


@pytest.fixture
def reader_bug(monkeypatch):
    """The gateway's reader refuses good notifies (a rule too strict), until the fix is deployed:
    call the fixture's value to deploy it."""
    real = services.bank_notify_read

    def too_strict(raw_body):
        raise services.BankNotifyRejected("paid_at: unsupported format")

    monkeypatch.setattr(services, "bank_notify_read", too_strict)
    yield lambda: monkeypatch.setattr(services, "bank_notify_read", real)
