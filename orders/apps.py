from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        from orders import participants, services
        from paysys import tcc

        participants.register()  # orders.pay, called by name by the TCC framework
        tcc.transaction_names(services.COMPLETE_ORDER, services.PAY_ORDER_BALANCE)  # reported by /metrics, 0 when idle
