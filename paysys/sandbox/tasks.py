"""The bank's sender. No Celery retries: the notify's schedule in the database is the retry,
and the beat pass (``sandbox.resend_bank_notifies``) sends whatever a lost task did not."""

from celery import shared_task

from paysys.sandbox import services


@shared_task(name="sandbox.send_bank_notify", acks_late=True)
def send_bank_notify(payment_id: int) -> bool:
    return services.notify_send_due(payment_id)


@shared_task(name="sandbox.send_bank_notifies", acks_late=True)
def send_bank_notifies(payment_ids: list[int]) -> int:
    return services.notifies_send_in_order(payment_ids)


@shared_task(name="sandbox.resend_bank_notifies", acks_late=True)
def resend_bank_notifies() -> int:
    return services.notifies_resend_due() + services.refund_notifies_send_due()


@shared_task(name="sandbox.send_refund_notifies", acks_late=True)
def send_refund_notifies() -> int:
    return services.refund_notifies_send_due()
