from django.contrib import admin

from orders.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["out_trade_no", "merchant_id", "merchant_order_no", "amount", "currency", "status", "created_at", "paid_at"]
    list_filter = ["status", "currency", "created_at"]
    search_fields = ["out_trade_no", "merchant_order_no", "bank_trade_no"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Order._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
