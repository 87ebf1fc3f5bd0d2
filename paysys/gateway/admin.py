from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.text import Truncator

from paysys.core.admin_base import RecordAdmin, linked
from paysys.gateway.models import BankNotify, BankNotifyReceipt
from paysys.gateway.services import bank_notify_reprocess


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
        "bank_trade_no",
        linked("out_trade_no"),
        "amount",
        "currency",
        "status",
        "paid_at",
        "received_at",
        "duplicates",
        "flag",
    ]
    list_filter = [FlaggedFilter, "status", "currency", "received_at"]
    search_fields = ["bank_trade_no", "out_trade_no"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in BankNotify._meta.fields]


@admin.register(BankNotifyReceipt)
class BankNotifyReceiptAdmin(RecordAdmin):
    """Every signed body as received. A REJECTED one is reprocessed, after a fix, by the action
    (or ``manage.py reprocess_bank_notifies``)."""

    list_display = ["id", "state", "received_at", "attempts", "bank_notify", "error_excerpt"]
    list_filter = ["state", "received_at"]
    search_fields = ["bank_notify__bank_trade_no"]
    date_hierarchy = "received_at"
    ordering = ["-id"]
    actions = ["reprocess_selected"]
    fields = [
        "state",
        "error",
        "attempts",
        "bank_notify",
        "received_at",
        "processed_at",
        "signature",
        "body",
    ]
    readonly_fields = fields

    @admin.display(description="error")
    def error_excerpt(self, obj: BankNotifyReceipt) -> str:
        return Truncator(obj.error).chars(80)

    @admin.display(description="body (as signed)")
    def body(self, obj: BankNotifyReceipt) -> str:
        text = bytes(obj.raw_body).decode("utf-8", errors="backslashreplace")
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.action(
        description="Reprocess selected receipts (rejected or stranded)", permissions=["change"]
    )
    def reprocess_selected(self, request, queryset):
        states = [bank_notify_reprocess(pk).state for pk in queryset.values_list("pk", flat=True)]
        processed = states.count(BankNotifyReceipt.State.PROCESSED)
        rejected = states.count(BankNotifyReceipt.State.REJECTED)
        self.message_user(
            request,
            f"{processed} processed, {rejected} still rejected.",
            messages.SUCCESS if not rejected else messages.WARNING,
        )
