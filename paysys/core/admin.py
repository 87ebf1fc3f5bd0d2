"""Merchants and payers, and the beat schedules core owns.

A merchant's secrets are never on a page: its API key is shown once by ``create_merchant``; a
webhook secret once, to the user who rotates it (the action needs ``core.change_merchant``), on
a page that is not cached.
"""

import logging

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from paysys.core.admin_base import RecordAdmin, action_needing
from paysys.core.errors import DomainError
from paysys.core.models import Merchant, Payer, PayerAgreement
from paysys.core.selectors import agreement_list
from paysys.core.services import (
    agreement_reissue,
    agreement_revoke,
    merchant_rotate_webhook_secret,
    webhook_secret_grace,
)

logger = logging.getLogger(__name__)


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "status",
        "fee_rate_bp",
        "notify_url",
        "api_key_prefix",
        "webhook_secret_rotated_at",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "api_key_prefix"]
    fields = [
        "name",
        "status",
        "notify_url",
        "fee_rate_bp",
        "api_key_prefix",
        "webhook_secret_rotated_at",
        "previous_webhook_secret_until",
        "created_at",
    ]
    readonly_fields = [
        "api_key_prefix",
        "webhook_secret_rotated_at",
        "previous_webhook_secret_until",
        "created_at",
    ]
    actions = ["rotate_webhook_secret"]

    def has_add_permission(self, request):
        # a merchant's API key is shown once, at creation: use `manage.py create_merchant`
        return False

    @admin.action(
        description="Rotate webhook secret (the old one keeps signing during the grace period)",
        permissions=["change"],
    )
    def rotate_webhook_secret(self, request, queryset):
        merchants = [
            merchant_rotate_webhook_secret(merchant_id=pk)
            for pk in queryset.values_list("pk", flat=True)
        ]
        for merchant in merchants:
            logger.info(
                "admin %s rotated the webhook secret of merchant %s", request.user, merchant.pk
            )
            self.log_change(request, merchant, "Rotated the webhook secret.")
        # the new secrets go in this response only: not in a message (a cookie or the session) that
        # outlives it, and never cached
        response = TemplateResponse(
            request,
            "admin/core/merchant/rotated_secrets.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "New webhook secrets",
                "merchants": merchants,
                "grace_hours": f"{webhook_secret_grace().total_seconds() / 3600:g}",
                "changelist_url": reverse(
                    "admin:core_merchant_changelist", current_app=self.admin_site.name
                ),
            },
        )
        add_never_cache_headers(response)
        return response


@admin.register(Payer)
class PayerAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "created_at"]
    search_fields = ["name"]


# django-celery-beat offers its actions to anyone who may view the schedules: a view-only user
# could disable the recovery passes or run them. Here they need django_celery_beat.change_periodictask.
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    enable_tasks = action_needing("change", beat_admin.PeriodicTaskAdmin.enable_tasks)
    disable_tasks = action_needing("change", beat_admin.PeriodicTaskAdmin.disable_tasks)
    toggle_tasks = action_needing("change", beat_admin.PeriodicTaskAdmin.toggle_tasks)
    run_tasks = action_needing("change", beat_admin.PeriodicTaskAdmin.run_tasks)


@admin.register(PayerAgreement)
class PayerAgreementAdmin(RecordAdmin):
    """Agreements are issued by ``manage.py payer_agreement issue`` (or ``create_payer``), which
    prints the token once; here they are read, revoked, or given a new token. Every field is
    read-only: the actions (which need the change permission) are the only writes."""

    list_display = [
        "id",
        "payer",
        "merchant",
        "state",
        "currency",
        "per_payment_limit",
        "daily_limit",
        "used_today",
        "token_prefix",
        "created_at",
        "created_by",
        "token_issued_at",
        "token_issued_by",
        "revoked_at",
        "revoked_by",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["=payer__id", "=merchant__id", "payer__name", "merchant__name", "token_prefix"]
    list_select_related = ["payer", "merchant"]
    readonly_fields = [f for f in list_display if f != "id"]
    fields = readonly_fields
    actions = ["revoke_selected", "reissue_token"]

    def get_queryset(self, request):
        return agreement_list().select_related("payer", "merchant")

    def has_change_permission(self, request, obj=None):
        # the list's actions need it; a row is never saved from a form (it would write back
        # what it read, over a revoke or reissue made meanwhile)
        return obj is None and super().has_change_permission(request)

    @admin.display(description="state")
    def state(self, obj):
        return "revoked" if obj.is_revoked else "in force"

    @admin.display(description="used today (minor units)")
    def used_today(self, obj):
        return obj.used_today

    @admin.action(
        description="Revoke selected agreements (their tokens are refused from now on)",
        permissions=["change"],
    )
    def revoke_selected(self, request, queryset):
        for agreement_id in queryset.values_list("pk", flat=True):
            agreement = agreement_revoke(
                agreement_id=agreement_id, revoked_by=f"admin:{request.user.get_username()}"
            )
            self.message_user(
                request,
                f"{agreement}: revoked at {agreement.revoked_at:%Y-%m-%d %H:%M} UTC by "
                f"{agreement.revoked_by}",
                messages.SUCCESS,
            )

    @admin.action(
        description="Reissue the token of selected agreements (the old token stops working)",
        permissions=["change"],
    )
    def reissue_token(self, request, queryset):
        issued = []
        for agreement_id in queryset.values_list("pk", flat=True):
            try:
                issued.append(
                    agreement_reissue(
                        agreement_id=agreement_id, issued_by=f"admin:{request.user.get_username()}"
                    )
                )
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        if not issued:
            return None
        # the new tokens go in this response only, never in a message (a cookie or the session)
        # that outlives it, and never cached: as the merchants' rotated webhook secrets
        response = TemplateResponse(
            request,
            "admin/core/payeragreement/reissued_tokens.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "New payer tokens",
                "issued": issued,
                "changelist_url": reverse(
                    "admin:core_payeragreement_changelist", current_app=self.admin_site.name
                ),
            },
        )
        add_never_cache_headers(response)
        return response
