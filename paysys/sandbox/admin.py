from django.contrib import admin

from paysys.core.admin_base import RecordAdmin
from paysys.sandbox import services
from paysys.sandbox.models import BankNotifyAttempt, BankPayment


class BankNotifyAttemptInline(admin.TabularInline):
    model = BankNotifyAttempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "duplicate",
        "sent_at",
        "status_code",
        "error",
        "duration_ms",
        "response_excerpt",
        "url",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(BankPayment)
class BankPaymentAdmin(RecordAdmin):
    """The simulated bank's payments and their notifies: ACKED, PENDING (unacknowledged, due
    again at next_attempt_at), HELD (waiting for a release), GAVE_UP (schedule exhausted)."""

    list_display = [
        "bank_trade_no",
        "out_trade_no",
        "amount",
        "currency",
        "paid_at",
        "notify_state",
        "notify_attempts",
        "last_status_code",
        "next_attempt_at",
        "acked_at",
    ]
    list_filter = ["notify_state", "currency", "paid_at"]
    search_fields = ["bank_trade_no", "out_trade_no"]
    date_hierarchy = "paid_at"
    readonly_fields = [f.name for f in BankPayment._meta.fields]
    inlines = [BankNotifyAttemptInline]
    actions = ["retry_notify"]

    @admin.action(
        description="Retry the notify of selected payments that gave up", permissions=["change"]
    )
    def retry_notify(self, request, queryset):
        retried = services.notifies_retry(list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request, f"{retried} notify(s) scheduled again; the next resend pass sends them"
        )


from paysys.sandbox.merchant import admin as merchant_admin  # noqa: E402,F401  registers the merchant simulator
