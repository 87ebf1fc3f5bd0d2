from django.contrib import admin

from paysys.core.models import Merchant, Payer


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "fee_rate_bp", "notify_url", "api_key_prefix", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "api_key_prefix"]
    fields = ["name", "status", "notify_url", "fee_rate_bp", "api_key_prefix", "webhook_secret", "created_at"]
    readonly_fields = ["api_key_prefix", "webhook_secret", "created_at"]

    def has_add_permission(self, request):
        # a merchant's API key is shown once, at creation: use `manage.py create_merchant`
        return False


@admin.register(Payer)
class PayerAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "created_at"]
    search_fields = ["name"]
