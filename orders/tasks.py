from celery import shared_task

from orders.expiry import orders_close_expired
from orders.polling import orders_poll_bank


@shared_task(name="orders.close_expired_orders")
def close_expired_orders() -> int:
    return orders_close_expired()


@shared_task(name="orders.poll_bank")
def poll_bank() -> int:
    return orders_poll_bank()


@shared_task(name="orders.poll_bank_refunds")
def poll_bank_refunds() -> int:
    from orders.refund_bank import refunds_poll_bank

    return refunds_poll_bank()
