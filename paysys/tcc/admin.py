"""TCC transactions in admin: each global transaction with its branches inline, read-only.

Filters: status, name, age, needs human. The one write is "Retry phase two now"
(``recovery.retry_now``): it clears the needs-human flag, restarts the backoff and sends the
unfinished confirms / cancels at once; it needs the ``tcc.change_globaltransaction`` permission.
"""

from __future__ import annotations

import json
import logging

from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.text import Truncator

from paysys.core.admin_base import AgeFilter, ReadOnlyAdmin, linked
from paysys.tcc import recovery
from paysys.tcc.models import GlobalTransaction, TransactionBranch

logger = logging.getLogger(__name__)


class BranchInline(admin.TabularInline):
    model = TransactionBranch
    verbose_name_plural = "branches"
    fields = [
        "branch_no",
        "action",
        "status",
        "attempts",
        "last_error",
        "payload_pretty",
        "updated_at",
    ]
    readonly_fields = fields
    ordering = ["branch_no"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="payload")
    def payload_pretty(self, obj: TransactionBranch) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))


@admin.register(GlobalTransaction)
class GlobalTransactionAdmin(ReadOnlyAdmin):
    list_display = [
        # what an operator scans first right after the id, so it stays on a 1280 px screen
        "xid",
        "status",
        "needs_human",
        "name",
        linked("business_key", description="business key (trace)"),
        "attempt",
        "attempts",
        "created_at",
        "next_retry_at",
        "last_error_excerpt",
    ]
    list_filter = ["status", "name", AgeFilter, "needs_human"]
    search_fields = ["xid", "business_key"]
    ordering = ["-id"]
    list_per_page = 100
    actions = ["retry_phase_two_now"]
    inlines = [BranchInline]
    readonly_fields = [f.name for f in GlobalTransaction._meta.fields]

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.display(description="last error")
    def last_error_excerpt(self, obj: GlobalTransaction) -> str:
        return Truncator(obj.last_error).chars(40)

    @admin.action(description="Retry phase two now", permissions=["retry"])
    def retry_phase_two_now(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        try:
            sent = recovery.retry_now(ids)
        except Exception as exc:  # noqa: BLE001 - the broker is down: tell the human, change nothing else
            self.message_user(request, f"Not sent: {exc.__class__.__name__}: {exc}", messages.ERROR)
            return
        logger.info(
            "admin %s retried phase two of %d of %d selected TCC transaction(s)",
            request.user,
            sent,
            len(ids),
        )
        self.message_user(
            request,
            f"Phase two sent again for {sent} transaction(s).",
            messages.SUCCESS if sent else messages.WARNING,
        )
        if len(ids) > sent:
            self.message_user(
                request,
                f"{len(ids) - sent} skipped: only CONFIRMING and CANCELLING transactions have a phase two to retry.",
                messages.WARNING,
            )
