import logging

from django.contrib import admin
from django.utils import timezone

from orders.models import Order, PaymentRecord
from paysys.core.admin_base import RecordAdmin, linked

logger = logging.getLogger(__name__)


@admin.register(Order)
class OrderAdmin(RecordAdmin):
    list_display = ["out_trade_no", linked("merchant_id", to="core_merchant"), "merchant_order_no", "amount", "currency", "status",
                    "pay_method", "created_at", "paid_at", linked("out_trade_no", description="trace")]
    list_filter = ["status", "pay_method", "currency", "created_at"]
    # tcc_xid: from an order to its TCC transaction in the coordinator's admin, and back
    search_fields = ["out_trade_no", "merchant_order_no", "bank_trade_no", "tcc_xid"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Order._meta.fields] + [linked("out_trade_no", description="trace")]


@admin.register(PaymentRecord)
class PaymentRecordAdmin(RecordAdmin):
    """Bank payments seen by orders; FLAGGED ones wait for a human (refund or manual fix)."""

    list_display = ["bank_trade_no", linked("out_trade_no"), "amount", "currency", "source", "outcome", "reason", "reviewed_at", "created_at"]
    list_filter = ["outcome", "source", ("reviewed_at", admin.EmptyFieldListFilter)]
    search_fields = ["bank_trade_no", "out_trade_no"]
    readonly_fields = [f.name for f in PaymentRecord._meta.fields]
    actions = ["mark_reviewed"]

    # it takes a payment off the review queue: only for users who may change payment records
    @admin.action(description="Mark selected flagged payments as reviewed", permissions=["change"])
    def mark_reviewed(self, request, queryset):
        updated = queryset.filter(outcome=PaymentRecord.Outcome.FLAGGED, reviewed_at__isnull=True).update(reviewed_at=timezone.now())
        logger.info("admin %s marked %d flagged payment(s) reviewed", request.user, updated)
        self.message_user(request, f"{updated} payment(s) marked reviewed")
