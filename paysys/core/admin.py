"""Merchants and payers, and the beat schedules core owns.

A merchant's secrets are never on a page: its API key is shown once by ``create_merchant``; a
webhook secret once, to the user who rotates it (the action needs ``core.change_merchant``), on
a page that is not cached.
"""

import logging

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from paysys.core.admin_base import action_needing
from paysys.core.models import Merchant, Payer
from paysys.core.services import merchant_rotate_webhook_secret, webhook_secret_grace

logger = logging.getLogger(__name__)


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "fee_rate_bp", "notify_url", "api_key_prefix", "webhook_secret_rotated_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "api_key_prefix"]
    fields = [
        "name", "status", "notify_url", "fee_rate_bp", "api_key_prefix",
        "webhook_secret_rotated_at", "previous_webhook_secret_until", "created_at",
    ]
    readonly_fields = ["api_key_prefix", "webhook_secret_rotated_at", "previous_webhook_secret_until", "created_at"]
    actions = ["rotate_webhook_secret"]

    def has_add_permission(self, request):
        # a merchant's API key is shown once, at creation: use `manage.py create_merchant`
        return False

    @admin.action(description="Rotate webhook secret (the old one keeps signing during the grace period)", permissions=["change"])
    def rotate_webhook_secret(self, request, queryset):
        merchants = [merchant_rotate_webhook_secret(merchant_id=pk) for pk in queryset.values_list("pk", flat=True)]
        for merchant in merchants:
            logger.info("admin %s rotated the webhook secret of merchant %s", request.user, merchant.pk)
            self.log_change(request, merchant, "Rotated the webhook secret.")
        # the new secrets go in this response only: not in a message (a cookie or the session) that
        # outlives it, and never cached
        response = TemplateResponse(request, "admin/core/merchant/rotated_secrets.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "New webhook secrets",
            "merchants": merchants,
            "grace_hours": f"{webhook_secret_grace().total_seconds() / 3600:g}",
            "changelist_url": reverse("admin:core_merchant_changelist", current_app=self.admin_site.name),
        })
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
