from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.template.response import TemplateResponse
from django.urls import path

from accounting.models import Account, Voucher, VoucherLine
from accounting.selectors import trial_balances
from paysys.core.admin_base import ReadOnlyAdmin, linked


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """The chart of accounts. Services book by code, and balances are read by kind and normal
    side: those are fixed once an account exists; only its name may be edited."""

    list_display = ["code", "name", "kind", "normal_side"]
    list_filter = ["kind"]
    search_fields = ["code", "name"]

    def get_readonly_fields(self, request, obj=None):
        return ["code", "kind", "normal_side"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False


class VoucherLineInline(admin.TabularInline):
    model = VoucherLine
    fields = ["account", "debit", "credit"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Voucher)
class VoucherAdmin(ReadOnlyAdmin):
    """Vouchers are booked only by the accounting service; here they are read, never edited
    (a correction is a new, reversing voucher)."""

    list_display = [
        "source",
        "currency",
        "amount",
        "description",
        "created_at",
        "message_id",
        linked("source", description="trace"),
    ]
    list_filter = ["currency", "created_at"]
    # the description names the merchant's order number and the bank trade number
    search_fields = ["source", "description"]
    search_help_text = "out_trade_no, merchant order number or bank trade number"
    date_hierarchy = "created_at"
    readonly_fields = ["source", "currency", "description", "created_at", "message_id"]
    inlines = [VoucherLineInline]
    change_list_template = "admin/accounting/voucher/change_list.html"

    class Media:
        css = {"all": ["accounting/voucher_admin.css"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(amount=Sum("lines__debit"))

    @admin.display(description="amount (Σ debit, minor units)", ordering="amount")
    def amount(self, obj):
        return obj.amount

    def get_urls(self):
        urls = [
            path(
                "trial-balance/",
                self.admin_site.admin_view(self.trial_balance_view),
                name="accounting_voucher_trial_balance",
            )
        ]
        return urls + super().get_urls()

    def trial_balance_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Trial balance",
            "balances": trial_balances(),
        }
        return TemplateResponse(request, "admin/accounting/trial_balance.html", context)
