import logging

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils import timezone

from orders.models import Order, PaymentRecord, Refund
from orders.refunds import refund_duplicate_payment
from paysys.core.admin_base import RecordAdmin, linked

logger = logging.getLogger(__name__)


@admin.register(Order)
class OrderAdmin(RecordAdmin):
    list_display = [
        "out_trade_no",
        linked("merchant_id", to="core_merchant"),
        "merchant_order_no",
        "amount",
        "currency",
        "status",
        "pay_method",
        "created_at",
        "paid_at",
        linked("out_trade_no", description="trace"),
    ]
    list_filter = ["status", "pay_method", "currency", "created_at"]
    # tcc_xid: from an order to its TCC transaction in the coordinator's admin, and back
    search_fields = ["out_trade_no", "merchant_order_no", "bank_trade_no", "tcc_xid"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Order._meta.fields] + [
        linked("out_trade_no", description="trace")
    ]


class RefundToPayerForm(forms.Form):
    why = forms.CharField(
        label="Reason",
        max_length=200,
        help_text=(
            "why this money goes back to the payer: recorded, with your name, on the refund and on the payment record"
        ),
    )


@admin.register(PaymentRecord)
class PaymentRecordAdmin(RecordAdmin):
    """Bank payments seen by orders; FLAGGED ones wait for a human (refund or manual fix)."""

    list_display = [
        "bank_trade_no",
        linked("out_trade_no"),
        "amount",
        "currency",
        "source",
        "outcome",
        "reason",
        "reviewed_at",
        "created_at",
    ]
    list_filter = ["outcome", "source", ("reviewed_at", admin.EmptyFieldListFilter)]
    search_fields = ["bank_trade_no", "out_trade_no"]
    readonly_fields = [f.name for f in PaymentRecord._meta.fields]
    actions = ["mark_reviewed", "refund_to_payer"]

    # it takes a payment off the review queue: only for users who may change payment records
    @admin.action(description="Mark selected flagged payments as reviewed", permissions=["change"])
    def mark_reviewed(self, request, queryset):
        updated = queryset.filter(
            outcome=PaymentRecord.Outcome.FLAGGED, reviewed_at__isnull=True
        ).update(reviewed_at=timezone.now())
        logger.info("admin %s marked %d flagged payment(s) reviewed", request.user, updated)
        self.message_user(request, f"{updated} payment(s) marked reviewed")

    # money goes back: only for users who may change payment records; who (requested_by) and
    # why (asked on a form first, required) are recorded on the refund and the payment record
    @admin.action(
        description="Refund selected flagged (duplicate) payments to the payer",
        permissions=["change"],
    )
    def refund_to_payer(self, request, queryset):
        flagged = queryset.filter(outcome=PaymentRecord.Outcome.FLAGGED)
        form = RefundToPayerForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "admin/orders/paymentrecord/refund_to_payer.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.model._meta,
                    "form": form,
                    "records": flagged,
                    "title": "Refund flagged payments to the payer",
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                },
            )
        done, refused = [], []
        for record in flagged:
            try:
                done.append(
                    refund_duplicate_payment(
                        bank_trade_no=record.bank_trade_no,
                        why=form.cleaned_data["why"],
                        requested_by=f"admin:{request.user.get_username()}",
                    ).refund_no
                )
            except Exception as exc:  # noqa: BLE001 - one payment's refusal is shown, the others go on
                refused.append(f"{record.bank_trade_no}: {exc}")
        logger.info(
            "admin %s refunded flagged payment(s) to the payer: %s", request.user, ", ".join(done)
        )
        self.message_user(
            request,
            f"{len(done)} refund(s) sent to the bank: {', '.join(done) or '-'}"
            + (f"; refused: {'; '.join(refused)}" if refused else ""),
        )
        return None


@admin.register(Refund)
class RefundAdmin(RecordAdmin):
    """Refunds: merchants' (order) and duplicate payments sent back to the payer; PENDING ones wait
    for their TCC or the bank's answer."""

    list_display = [
        "refund_no",
        linked("merchant_id", to="core_merchant"),
        "merchant_refund_no",
        linked("out_trade_no"),
        "amount",
        "currency",
        "method",
        "kind",
        "status",
        "failure_reason",
        "requested_by",
        "created_at",
        "finished_at",
        linked("out_trade_no", description="trace"),
    ]
    list_filter = ["status", "method", "kind", "currency", "created_at"]
    search_fields = ["refund_no", "merchant_refund_no", "out_trade_no", "tcc_xid", "requested_by"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Refund._meta.fields]
