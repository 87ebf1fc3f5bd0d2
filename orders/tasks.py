from celery import shared_task

from orders.services import orders_close_expired


@shared_task(name="orders.close_expired_orders")
def close_expired_orders() -> int:
    return orders_close_expired()
