from django.contrib import admin

from paysys.core.admin_base import RecordAdmin
from paysys.gateway.models import BankNotify


class FlaggedFilter(admin.SimpleListFilter):
    """Notifies a later, differing notify with the same bank_trade_no flagged for a human."""

    title = "flagged"
    parameter_name = "flagged"

    def lookups(self, request, model_admin):
        return [("yes", "Flagged"), ("no", "Not flagged")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(flag="")
        if self.value() == "no":
            return queryset.filter(flag="")
        return queryset


@admin.register(BankNotify)
class BankNotifyAdmin(RecordAdmin):
    list_display = [
        "bank_trade_no", "out_trade_no", "amount", "currency", "status", "paid_at", "received_at", "duplicates", "flag",
    ]
    list_filter = [FlaggedFilter, "status", "currency", "received_at"]
    search_fields = ["bank_trade_no", "out_trade_no"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in BankNotify._meta.fields]
