"""Fund and points accounts and their entries: read-only rows (only services write them).

One operator action changes money: "Credit a payer's wallet" (needs the
``accounts.credit_wallet`` permission) calls ``accounts.services.wallet_credit``, which records
who and why in the entry and publishes ``WalletCredited`` for accounting.
"""

from __future__ import annotations

import logging
import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from accounts.models import FundAccount, FundEntry, PointsAccount, PointsEntry
from accounts.services import MAX_AMOUNT, wallet_credit
from paysys.core.admin_base import ReadOnlyAdmin, linked
from paysys.core.errors import DomainError

logger = logging.getLogger(__name__)


class CreditWalletForm(forms.Form):
    payer_id = forms.IntegerField(min_value=1, label="Payer id")
    amount = forms.IntegerField(
        min_value=1, max_value=MAX_AMOUNT, help_text="minor units (fen): 1000 = 10.00"
    )
    currency = forms.ChoiceField(choices=[])
    reason = forms.CharField(max_length=255, help_text="why: kept in the entry and the voucher")
    # one key per rendered form: submitting it twice (a double click, the back button) credits once
    request_key = forms.CharField(max_length=64, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["currency"].choices = [(c, c) for c in settings.ORDER_CURRENCIES]
        self.fields["request_key"].initial = uuid.uuid4().hex


@admin.register(FundAccount)
class FundAccountAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "owner_type",
        "owner_id",
        "currency",
        "balance",
        "available",
        "frozen",
        "pending_in",
        "entries",
        "updated_at",
    ]
    list_filter = ["owner_type", "currency"]
    search_fields = ["=owner_id"]
    readonly_fields = [*list_display, "created_at"]
    actions = ["credit_selected_wallet"]
    change_list_template = "admin/accounts/fundaccount/change_list.html"

    @admin.display(description="available (balance − frozen)")
    def available(self, obj):
        return obj.available

    @admin.display(description="entries")
    def entries(self, obj):
        url = reverse(
            f"admin:{self.opts.app_label}_fundentry_changelist", current_app=self.admin_site.name
        )
        return format_html('<a href="{}?account__id__exact={}">entries</a>', url, obj.pk)

    def has_credit_wallet_permission(self, request) -> bool:
        return request.user.has_perm("accounts.credit_wallet")

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "credit-wallet/",
                self.admin_site.admin_view(self.credit_wallet_view),
                name="%s_%s_credit_wallet" % info,
            ),
            *super().get_urls(),
        ]

    def _credit_url(self, **query) -> str:
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_credit_wallet",
            current_app=self.admin_site.name,
        )
        return f"{url}?{urlencode(query)}" if query else url

    def changelist_view(self, request, extra_context=None):
        context = {
            "credit_wallet_url": self._credit_url(),
            "can_credit_wallet": self.has_credit_wallet_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    @admin.action(description="Credit the selected payer's wallet…", permissions=["credit_wallet"])
    def credit_selected_wallet(self, request, queryset):
        wallets = list(queryset.filter(owner_type=FundAccount.Owner.PAYER)[:2])
        if len(wallets) != 1:
            self.message_user(request, "Select exactly one payer wallet.", messages.WARNING)
            return None
        return HttpResponseRedirect(
            self._credit_url(payer_id=wallets[0].owner_id, currency=wallets[0].currency)
        )

    def credit_wallet_view(self, request):
        if not self.has_credit_wallet_permission(request):
            raise PermissionDenied
        form = CreditWalletForm(request.POST or None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                entry = wallet_credit(
                    payer_id=data["payer_id"],
                    amount=data["amount"],
                    currency=data["currency"],
                    reason=data["reason"],
                    credited_by=f"admin:{request.user.get_username()}",
                    request_key=data["request_key"],
                )
            except DomainError as exc:
                for field, message in (exc.fields or {"__all__": exc.message}).items():
                    form.add_error(field if field in form.fields else None, message)
            except DatabaseError:
                logger.warning("credit wallet: a database is unavailable", exc_info=True)
                form.add_error(
                    None,
                    "A database is unavailable. Submit again later: this form credits at most once.",
                )
            else:
                self.message_user(
                    request,
                    f"Credited {entry.amount} {data['currency']} to payer #{data['payer_id']}'s wallet; "
                    f"balance now {entry.balance_after}.",
                    messages.SUCCESS,
                )
                changelist = reverse(
                    f"admin:{self.opts.app_label}_fundentry_changelist",
                    current_app=self.admin_site.name,
                )
                return HttpResponseRedirect(f"{changelist}?account__id__exact={entry.account_id}")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Credit a payer's wallet",
            "form": form,
        }
        return TemplateResponse(request, "admin/accounts/fundaccount/credit_wallet.html", context)


@admin.register(FundEntry)
class FundEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "account",
        "kind",
        "direction",
        "amount",
        "balance_after",
        linked("out_trade_no"),
        linked("xid"),
        "reason",
        "created_by",
        "created_at",
    ]
    list_filter = [
        "kind",
        "direction",
        "account__owner_type",
        "created_at",
    ]  # and ?account__id__exact=<id>
    search_fields = ["=xid", "=out_trade_no", "=account__owner_id", "created_by"]
    list_select_related = ["account"]
    date_hierarchy = "created_at"
    readonly_fields = list_display


@admin.register(PointsAccount)
class PointsAccountAdmin(ReadOnlyAdmin):
    list_display = ["id", linked("payer_id", to="core_payer"), "balance", "pending", "updated_at"]
    search_fields = ["=payer_id"]
    readonly_fields = [*list_display, "created_at"]


@admin.register(PointsEntry)
class PointsEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "account",
        "kind",
        "points",
        "balance_after",
        linked("out_trade_no"),
        linked("xid"),
        "reason",
        "created_at",
    ]
    list_filter = ["kind", "created_at"]
    search_fields = ["=xid", "=out_trade_no", "=account__payer_id"]
    list_select_related = ["account"]
    date_hierarchy = "created_at"
    readonly_fields = list_display
