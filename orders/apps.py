from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        from orders import participants, payments, refunds
        from paysys import tcc

        participants.register()  # orders.pay, called by name by the TCC framework
        refunds.register()  # orders.refund
        tcc.transaction_names(
            payments.COMPLETE_ORDER, payments.PAY_ORDER_BALANCE, refunds.REFUND_ORDER
        )  # reported by /metrics, 0 when idle
