from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "paysys.gateway"
    label = "gateway"
    verbose_name = "Gateway: bank notifies"

    def ready(self) -> None:
        from paysys.core import retention
        from paysys.gateway.models import BankNotifyReceipt
        from paysys.gateway.selectors import bank_notify_receipts_processed_before

        # the stored notifies themselves stay: they are what makes a repeated notify a duplicate
        retention.register(
            retention.PurgeTable(
                label="bank-notify receipts",
                model_rows=lambda: BankNotifyReceipt.objects.all(),
                rows=bank_notify_receipts_processed_before,
                written="received_at",
            )
        )
