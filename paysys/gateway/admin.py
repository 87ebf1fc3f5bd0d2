from django.contrib import admin

from paysys.gateway.models import BankNotify


@admin.register(BankNotify)
class BankNotifyAdmin(admin.ModelAdmin):
    list_display = ["bank_trade_no", "out_trade_no", "amount", "currency", "status", "paid_at", "received_at", "duplicates"]
    list_filter = ["status", "currency", "received_at"]
    search_fields = ["bank_trade_no", "out_trade_no"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in BankNotify._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
