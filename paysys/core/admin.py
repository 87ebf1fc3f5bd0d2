from django.contrib import admin, messages

from paysys.core.models import Merchant, Payer
from paysys.core.services import merchant_rotate_webhook_secret, webhook_secret_grace


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "fee_rate_bp", "notify_url", "api_key_prefix", "webhook_secret_rotated_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "api_key_prefix"]
    fields = [
        "name", "status", "notify_url", "fee_rate_bp", "api_key_prefix", "webhook_secret",
        "webhook_secret_rotated_at", "previous_webhook_secret_until", "created_at",
    ]
    readonly_fields = ["api_key_prefix", "webhook_secret", "webhook_secret_rotated_at", "previous_webhook_secret_until", "created_at"]
    actions = ["rotate_webhook_secret"]

    def has_add_permission(self, request):
        # a merchant's API key is shown once, at creation: use `manage.py create_merchant`
        return False

    @admin.action(description="Rotate webhook secret (the old one keeps signing during the grace period)")
    def rotate_webhook_secret(self, request, queryset):
        hours = webhook_secret_grace().total_seconds() / 3600
        for merchant_id in queryset.values_list("pk", flat=True):
            merchant = merchant_rotate_webhook_secret(merchant_id=merchant_id)
            self.message_user(
                request,
                f"{merchant}: new webhook secret {merchant.webhook_secret} — give it to the merchant; "
                f"the previous one keeps signing for {hours:g} h (until {merchant.previous_webhook_secret_until:%Y-%m-%d %H:%M} UTC).",
                messages.SUCCESS,
            )


@admin.register(Payer)
class PayerAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "created_at"]
    search_fields = ["name"]
