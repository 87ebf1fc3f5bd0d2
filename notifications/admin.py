"""Operating notifications: every record with its attempts, the endpoints and their health.

Rows are written by the services only (read-only admin); humans act through actions that call
them: resend selected, recover every failed notification of a merchant since a time, enable or
disable an endpoint. The endpoint list shows each merchant's success rate over the last 24 h.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Case,
    Count,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator

from notifications import services
from notifications.models import Attempt, Endpoint, Notification
from paysys.core.admin_base import ReadOnlyAdmin, linked
from paysys.core.errors import Conflict
from paysys.core.models import Merchant

logger = logging.getLogger(__name__)

ALIAS = services.ALIAS
Status = Notification.Status
RATE_WINDOW = timedelta(hours=24)


def merchant_link(merchant_id: int) -> str:
    url = reverse("admin:core_merchant_change", args=[merchant_id])
    return format_html('<a href="{}">#{}</a>', url, merchant_id)


def merchant_choices() -> list[tuple[int, str]]:
    """Merchants that have an endpoint (a small table), named from core identity."""
    ids = set(Endpoint.objects.values_list("merchant_id", flat=True).distinct())
    names = dict(Merchant.objects.filter(pk__in=ids).values_list("pk", "name"))
    return [
        (merchant_id, f"#{merchant_id} {names.get(merchant_id, '(unknown)')}")
        for merchant_id in sorted(ids)
    ]


# --- list filters ----------------------------------------------------------------------------


class MerchantFilter(admin.SimpleListFilter):
    title = "merchant"
    parameter_name = "merchant"

    def lookups(self, request, model_admin):
        return merchant_choices()

    def queryset(self, request, queryset):
        if self.value():
            try:
                return queryset.filter(merchant_id=int(self.value()))
            except ValueError:
                return queryset.none()
        return queryset


class EndpointHealthFilter(admin.SimpleListFilter):
    """Failing = its last attempt failed (and it is enabled); disabled = by a 410 or an operator."""

    title = "endpoint"
    parameter_name = "endpoint_health"
    PREFIX = ""  # "endpoint__" on the notification list

    def lookups(self, request, model_admin):
        return [("failing", "Failing"), ("disabled", "Disabled"), ("healthy", "Healthy")]

    def queryset(self, request, queryset):
        p = self.PREFIX
        conditions = {
            "failing": Q(**{f"{p}consecutive_failures__gt": 0, f"{p}disabled_at__isnull": True}),
            "disabled": Q(**{f"{p}disabled_at__isnull": False}),
            "healthy": Q(**{f"{p}consecutive_failures": 0, f"{p}disabled_at__isnull": True}),
        }
        return queryset.filter(conditions[self.value()]) if self.value() in conditions else queryset


class NotificationEndpointFilter(EndpointHealthFilter):
    PREFIX = "endpoint__"


# --- notifications ---------------------------------------------------------------------------


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = [
        "number",
        "trigger",
        "started_at",
        "outcome",
        "status_code",
        "error_class",
        "error",
        "duration_ms",
        "address",
        "response_excerpt",
        "request_headers",
    ]
    readonly_fields = fields
    ordering = ["-number"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RecoverForm(forms.Form):
    merchant = forms.TypedChoiceField(coerce=int)
    since = forms.DateTimeField(
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="UTC; records created at or after this time",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["merchant"].choices = merchant_choices()


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = [
        "webhook_id",
        "merchant",
        "merchant_order_no",
        linked("out_trade_no"),
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "created_at",
        "last_error_excerpt",
    ]
    list_filter = ["status", MerchantFilter, NotificationEndpointFilter, "event_type"]
    search_fields = ["=webhook_id", "=out_trade_no", "=merchant_order_no"]
    list_select_related = ["endpoint"]
    list_per_page = 100
    show_full_result_count = False  # no COUNT(*) of the whole history on every page
    actions = ["resend_selected", "recover_merchants"]
    inlines = [AttemptInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "webhook_id",
                    "event_type",
                    "merchant",
                    "order_id",
                    "merchant_order_no",
                    "out_trade_no",
                    "status",
                ]
            },
        ),
        (
            "Delivery",
            {
                "fields": [
                    "endpoint_state",
                    "url",
                    "attempt_count",
                    "step",
                    "next_attempt_at",
                    "last_status_code",
                    "last_error",
                    "created_at",
                    "updated_at",
                    "succeeded_at",
                    "message_id",
                ]
            },
        ),
        ("Body (exactly as signed and sent)", {"fields": ["body_pretty"]}),
    ]
    readonly_fields = [f.name for f in Notification._meta.fields] + [
        "merchant",
        "endpoint_state",
        "body_pretty",
    ]

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("notifications.change_notification")

    @admin.display(description="merchant", ordering="merchant_id")
    def merchant(self, obj: Notification) -> str:
        return merchant_link(obj.merchant_id)

    @admin.display(description="last error")
    def last_error_excerpt(self, obj: Notification) -> str:
        return Truncator(obj.last_error).chars(60)

    @admin.display(description="endpoint")
    def endpoint_state(self, obj: Notification) -> str:
        endpoint = obj.endpoint
        url = reverse("admin:notifications_endpoint_change", args=[endpoint.pk])
        if endpoint.is_disabled:
            state = f"disabled since {endpoint.disabled_at:%Y-%m-%d %H:%M} UTC: {endpoint.disabled_reason}"
        elif endpoint.consecutive_failures:
            state = f"failing ({endpoint.consecutive_failures} failed attempts in a row)"
        else:
            state = "healthy"
        return format_html('<a href="{}">{}</a> — {}', url, endpoint.url, state)

    @admin.display(description="body")
    def body_pretty(self, obj: Notification) -> str:
        try:
            text = json.dumps(json.loads(obj.body), indent=2, ensure_ascii=False)
        except ValueError:
            text = obj.body
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    # --- actions -----------------------------------------------------------------------------

    @admin.action(
        description="Resend selected notifications (same webhook-id, schedule from the start)",
        permissions=["operate"],
    )
    def resend_selected(self, request, queryset):
        resent, refused = 0, []
        for notification in queryset.select_related("endpoint"):
            try:
                services.notification_resend(notification)
                resent += 1
            except Conflict:
                refused.append(notification.webhook_id)
        logger.info(
            "admin %s resent %d notification(s), %d refused", request.user, resent, len(refused)
        )
        self.message_user(
            request,
            f"{resent} notification(s) resent.",
            messages.SUCCESS if resent else messages.WARNING,
        )
        if refused:
            self.message_user(
                request,
                f"{len(refused)} not resent: their endpoint is disabled (enable it first): "
                f"{', '.join(refused[:5])}{' …' if len(refused) > 5 else ''}",
                messages.WARNING,
            )

    @admin.action(
        description="Recover every failed notification of these merchants since …",
        permissions=["operate"],
    )
    def recover_merchants(self, request, queryset):
        merchant_ids = sorted(set(queryset.values_list("merchant_id", flat=True)))
        query = {"merchant": merchant_ids[0]} if len(merchant_ids) == 1 else {}
        if len(merchant_ids) > 1:
            self.message_user(request, "Several merchants selected: choose one.", messages.WARNING)
        return HttpResponseRedirect(self._url("recover", query=query))

    # --- views -------------------------------------------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "recover/",
                self.admin_site.admin_view(self.recover_view),
                name="%s_%s_recover" % info,
            ),
            *super().get_urls(),
        ]

    def _url(self, name: str, *args, query: dict | None = None) -> str:
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}",
            args=args,
            current_app=self.admin_site.name,
        )
        return f"{url}?{urlencode(query)}" if query else url

    def changelist_view(self, request, extra_context=None):
        context = {
            "recover_url": self._url("recover"),
            "can_operate": self.has_operate_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def recover_view(self, request):
        """Resend every FAILED notification of one merchant created since a time (Svix's
        "recover"): GET shows the form and, once filled, how many would go; POST does it."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = RecoverForm(request.POST)
            if form.is_valid():
                merchant_id, since = form.cleaned_data["merchant"], form.cleaned_data["since"]
                resent = services.notifications_recover_failed(merchant_id=merchant_id, since=since)
                logger.info(
                    "admin %s recovered %d failed notification(s) of merchant %s since %s",
                    request.user,
                    resent,
                    merchant_id,
                    since,
                )
                self.message_user(
                    request,
                    f"{resent} failed notification(s) of merchant #{merchant_id} since {since:%Y-%m-%d %H:%M} "
                    "UTC are due again.",
                    messages.SUCCESS if resent else messages.WARNING,
                )
                return HttpResponseRedirect(
                    self._url("changelist", query={"merchant": merchant_id})
                )
        elif "merchant" in request.GET and "since" in request.GET:
            form = RecoverForm(request.GET)
        else:
            since = (timezone.now() - RATE_WINDOW).replace(second=0, microsecond=0)
            form = RecoverForm(initial={"merchant": request.GET.get("merchant"), "since": since})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Recover failed notifications of a merchant",
            "form": form,
            "preview": self._recover_preview(form) if form.is_bound and form.is_valid() else None,
        }
        return TemplateResponse(request, "admin/notifications/notification/recover.html", context)

    def _recover_preview(self, form: RecoverForm) -> dict:
        merchant_id, since = form.cleaned_data["merchant"], form.cleaned_data["since"]
        failed = Notification.objects.filter(
            merchant_id=merchant_id, status=Status.FAILED, created_at__gte=since
        )
        counts = failed.aggregate(
            total=Count("id"), disabled=Count("id", filter=Q(endpoint__disabled_at__isnull=False))
        )
        succeeded, attempts = success_rate(merchant_id)
        return {
            "merchant_id": merchant_id,
            "since": since,
            "failed": counts["total"],
            "disabled": counts["disabled"],
            "resent": counts["total"] - counts["disabled"],
            "rate": format_rate(succeeded, attempts),
            "changelist_url": self._url(
                "changelist", query={"merchant": merchant_id, "status__exact": Status.FAILED}
            ),
        }


def success_rate(merchant_id: int) -> tuple[int, int]:
    from notifications.selectors import success_rates

    return success_rates([merchant_id]).get(merchant_id, (0, 0))


def format_rate(succeeded: int | None, attempts: int | None) -> str:
    if not attempts:
        return "no attempts"
    return f"{100 * succeeded / attempts:.1f} % ({succeeded} of {attempts})"


# --- endpoints -------------------------------------------------------------------------------


def _attempts_24h(since, **conditions):
    """Attempts of the row's merchant since ``since``: a correlated count on the
    (merchant_id, started_at) index, evaluated for the page's rows only."""
    return Coalesce(
        Subquery(
            Attempt.objects.filter(
                merchant_id=OuterRef("merchant_id"), started_at__gte=since, **conditions
            )
            .order_by()
            .values("merchant_id")
            .annotate(n=Count("id"))
            .values("n")[:1],
            output_field=IntegerField(),
        ),
        Value(0),
    )


class EndpointDisableForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


@admin.register(Endpoint)
class EndpointAdmin(ReadOnlyAdmin):
    list_display = [
        "url",
        "merchant",
        "state",
        "consecutive_failures",
        "success_24h_display",
        "last_attempt_at",
        "last_success_at",
    ]
    list_filter = [EndpointHealthFilter, MerchantFilter]
    search_fields = ["url", "=merchant_id"]
    actions = ["disable_selected", "enable_selected", "enable_selected_without_recovery"]
    readonly_fields = [f.name for f in Endpoint._meta.fields] + ["merchant", "success_24h_display"]

    def get_queryset(self, request):
        since = timezone.now() - RATE_WINDOW
        attempts = _attempts_24h(since)
        succeeded = _attempts_24h(since, outcome=Attempt.Outcome.SUCCEEDED)
        return (
            super()
            .get_queryset(request)
            .annotate(
                attempts_24h=attempts,
                succeeded_24h=succeeded,
                success_24h=Case(
                    When(attempts_24h=0, then=Value(None)),
                    default=Cast(succeeded, FloatField()) / Cast(attempts, FloatField()),
                    output_field=FloatField(),
                ),
            )
        )

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("notifications.change_endpoint")

    @admin.display(description="merchant", ordering="merchant_id")
    def merchant(self, obj: Endpoint) -> str:
        return merchant_link(obj.merchant_id)

    @admin.display(description="state", ordering="disabled_at")
    def state(self, obj: Endpoint) -> str:
        if obj.is_disabled:
            return f"disabled: {obj.disabled_reason}"
        return "failing" if obj.consecutive_failures else "enabled"

    @admin.display(description="merchant success (24 h)", ordering="success_24h")
    def success_24h_display(self, obj: Endpoint) -> str:
        return format_rate(getattr(obj, "succeeded_24h", None), getattr(obj, "attempts_24h", None))

    @admin.action(
        description="Disable selected endpoints (nothing is sent until enabled)",
        permissions=["operate"],
    )
    def disable_selected(self, request, queryset):
        for endpoint in queryset:
            services.endpoint_disable(endpoint, reason=f"disabled by {request.user} in admin")
        logger.info("admin %s disabled %d endpoint(s)", request.user, len(queryset))
        self.message_user(request, f"{len(queryset)} endpoint(s) disabled.", messages.SUCCESS)

    @admin.action(
        description="Enable selected endpoints and resend what failed while disabled",
        permissions=["operate"],
    )
    def enable_selected(self, request, queryset):
        self._enable(request, queryset, recover=True)

    @admin.action(description="Enable selected endpoints (resend nothing)", permissions=["operate"])
    def enable_selected_without_recovery(self, request, queryset):
        self._enable(request, queryset, recover=False)

    def _enable(self, request, queryset, *, recover: bool) -> None:
        resent = sum(services.endpoint_enable(endpoint, recover=recover) for endpoint in queryset)
        logger.info(
            "admin %s enabled %d endpoint(s), %d notification(s) resent",
            request.user,
            len(queryset),
            resent,
        )
        self.message_user(
            request,
            f"{len(queryset)} endpoint(s) enabled; {resent} notification(s) resent.",
            messages.SUCCESS,
        )
