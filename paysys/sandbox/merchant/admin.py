"""What the merchant simulator received: every request with its verdict, and the notifications it
processed (once per webhook-id). The endpoints' behaviour switches are editable here too."""

from django.contrib import admin

from paysys.core.admin_base import ReadOnlyAdmin
from paysys.sandbox.merchant.models import MerchantDelivery, MerchantEndpoint, MerchantNotification


@admin.register(MerchantEndpoint)
class MerchantEndpointAdmin(admin.ModelAdmin):
    list_display = [
        "merchant_id",
        "gone",
        "hang_seconds",
        "fail_next",
        "fail_status",
        "retry_after",
        "delay_ms",
        "updated_at",
    ]
    search_fields = ["merchant_id"]
    fields = [
        "merchant_id",
        "fail_next",
        "fail_status",
        "retry_after",
        "hang_seconds",
        "delay_ms",
        "gone",
        "created_at",
        "updated_at",
    ]
    readonly_fields = ["merchant_id", "created_at", "updated_at"]  # the secret is never shown

    def has_add_permission(self, request):
        return False  # set up over HTTP with the merchant's secret (POST /sandbox/merchant/<id>)


@admin.register(MerchantNotification)
class MerchantNotificationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "endpoint",
        "type",
        "merchant_order_no",
        "out_trade_no",
        "webhook_id",
        "deliveries",
        "received_at",
    ]
    list_filter = ["type"]
    search_fields = ["webhook_id", "out_trade_no", "merchant_order_no"]
    readonly_fields = [f.name for f in MerchantNotification._meta.fields]


@admin.register(MerchantDelivery)
class MerchantDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "received_at",
        "endpoint",
        "webhook_id",
        "verified",
        "error",
        "duplicate",
        "behaviour",
        "status_code",
    ]
    list_filter = ["verified", "duplicate", "behaviour", "status_code"]
    search_fields = ["webhook_id", "endpoint__merchant_id"]
    readonly_fields = [f.name for f in MerchantDelivery._meta.fields]
    list_select_related = ["endpoint"]
