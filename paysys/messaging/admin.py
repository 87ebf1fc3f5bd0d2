"""Messages of every service in one admin, read-only; the only writes are resends.

Every database alias has its own outbox table and Django admin shows one queryset at a time, so
the changelist shows one service at a time: the ``service`` filter (``?service=<alias>``, default
``default``) picks the alias and ``get_queryset`` reads it, which makes the detail page, the
actions and the other filters follow. Links into a detail page carry the choice along in the
admin's preserved filters (``_changelist_filters``).

Human actions, each calling the service layer (docs/architecture.md: every step a human may need is one click):
  * "Resend selected" (changelist action) and "Resend" (detail page)  -> actions.resend
  * "Resend all dead of a queue" (custom view)                         -> actions.resend_dead_messages
    (its twin for scripts: ``manage.py resend_dead_messages --service S --queue Q``)
Resending needs the ``messaging.change_message`` permission; nothing can be added, edited or
deleted here.
"""

from __future__ import annotations

import json
import logging

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator

from paysys.core.admin_base import AgeFilter, ReadOnlyAdmin, format_age
from paysys.messaging import actions, outbox
from paysys.messaging.metrics import outbox_stats_by_alias
from paysys.messaging.models import Message
from paysys.messaging.selectors import dead_messages

logger = logging.getLogger(__name__)

Status = Message.Status
DEFAULT_SERVICE = "default"
RESEND_CHUNK = 500  # ids per actions.resend call: stays under every database's parameter limit


def service_label(alias: str) -> str:
    service = settings.SERVICE_ALIASES.get(alias, alias)
    return alias if service == alias else f"{service} ({alias})"


def service_alias(request) -> str | None:
    """The alias the request is about: ``?service=``, else the changelist's preserved filters,
    else ``default``. ``None`` for a name that is not a database alias."""
    alias = request.GET.get("service")
    if alias is None and request.GET.get("_changelist_filters"):
        alias = QueryDict(request.GET["_changelist_filters"]).get("service")
    alias = alias or DEFAULT_SERVICE
    return alias if alias in settings.DATABASES else None


# --- list filters ----------------------------------------------------------------------------


class ServiceFilter(admin.SimpleListFilter):
    """Which service's outbox to show. There is no "All": one database per queryset."""

    title = "service"
    parameter_name = "service"

    def lookups(self, request, model_admin):
        return [(alias, service_label(alias)) for alias in settings.DATABASES]

    def queryset(self, request, queryset):
        return queryset  # MessageAdmin.get_queryset already chose the alias

    def get_facet_counts(self, pk_attname, filtered_qs):
        return {}  # one aggregate cannot count rows in other databases

    def choices(self, changelist):
        current = self.value() or DEFAULT_SERVICE
        for alias, title in self.lookup_choices:
            yield {
                "selected": alias == current,
                "query_string": changelist.get_query_string({self.parameter_name: alias}),
                "display": title,
            }


class DeadFilter(admin.SimpleListFilter):
    title = "dead"
    parameter_name = "dead"

    def lookups(self, request, model_admin):
        return [("yes", "Dead"), ("no", "Not dead")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=Status.DEAD)
        if self.value() == "no":
            return queryset.exclude(status=Status.DEAD)
        return queryset


# --- forms -----------------------------------------------------------------------------------


class ResendDeadForm(forms.Form):
    service = forms.ChoiceField()
    queue = forms.ChoiceField(help_text="the consumers' queue whose dead messages are resent")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service"].choices = [
            (alias, service_label(alias)) for alias in settings.DATABASES
        ]
        self.fields["queue"].choices = [(queue, queue) for queue in settings.SERVICE_QUEUES]


# --- the admin -------------------------------------------------------------------------------


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = [
        "message_id",
        "topic",
        "consumer",
        "queue",
        "status",
        "send_count",
        "next_send_at",
        "created_at",
        "last_error_excerpt",
    ]
    list_filter = [ServiceFilter, "status", DeadFilter, "topic", "queue", AgeFilter]
    search_fields = ["message_id", "business_key"]
    ordering = ["-id"]
    list_per_page = 100
    actions = ["resend_selected"]
    fieldsets = [
        (None, {"fields": ["service", "message_id", "topic", "consumer", "queue", "status"]}),
        (
            "Delivery",
            {
                "fields": [
                    "send_count",
                    "next_send_at",
                    "created_at",
                    "confirmed_at",
                    "consumed_at",
                    "last_error",
                ]
            },
        ),
        ("Two-phase", {"fields": ["business_key", "check_back", "check_count"]}),
        ("Payload", {"fields": ["payload_pretty"]}),
    ]
    readonly_fields = [f.name for f in Message._meta.fields] + ["service", "payload_pretty"]

    # --- the alias ---------------------------------------------------------------------------

    def get_queryset(self, request):
        alias = service_alias(request)
        if alias is None:
            raise IncorrectLookupParameters("unknown service")
        return super().get_queryset(request).using(alias)

    def get_object(self, request, object_id, from_field=None):
        try:
            return super().get_object(request, object_id, from_field)
        except IncorrectLookupParameters:
            return None

    # --- permissions: read-only (ReadOnlyAdmin), resends only --------------------------------

    def has_resend_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    # --- columns and detail fields -----------------------------------------------------------

    @admin.display(description="last error")
    def last_error_excerpt(self, obj: Message) -> str:
        return Truncator(obj.last_error).chars(80)

    @admin.display(description="service")
    def service(self, obj: Message) -> str:
        return service_label(obj._state.db)

    @admin.display(description="payload")
    def payload_pretty(self, obj: Message) -> str:
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre>',
            json.dumps(obj.payload, indent=2, ensure_ascii=False, sort_keys=True),
        )

    # --- views -------------------------------------------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name="%s_%s_dashboard" % info),
            path("resend-dead/", wrap(self.resend_dead_view), name="%s_%s_resend_dead" % info),
            path("<path:object_id>/resend/", wrap(self.resend_view), name="%s_%s_resend" % info),
            path(
                "<path:object_id>/settle/<str:verdict>/",
                wrap(self.settle_view),
                name="%s_%s_settle" % info,
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
        alias = service_alias(request) or DEFAULT_SERVICE
        context = {
            "title": f"Messages in {service_label(alias)}",
            "dashboard_url": self._url("dashboard"),
            "resend_dead_url": self._url("resend_dead", query={"service": alias}),
            "can_resend": self.has_resend_permission(request),
            **(extra_context or {}),
        }
        try:
            response = super().changelist_view(request, context)
            if isinstance(response, TemplateResponse):
                response.render()  # inside the try: the filters query while rendering
            return response
        except DatabaseError:
            logger.warning("message admin: database %s unavailable", alias, exc_info=True)
            self.message_user(
                request, f"The {service_label(alias)} database is unavailable.", messages.ERROR
            )
            return HttpResponseRedirect(self._url("dashboard"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        context = {
            "can_resend": self.has_resend_permission(request),
            "resend_url": self._url("resend", object_id, query=request.GET.dict() or None),
            "confirm_url": self._url(
                "settle", object_id, "confirm", query=request.GET.dict() or None
            ),
            "discard_url": self._url(
                "settle", object_id, "discard", query=request.GET.dict() or None
            ),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    @admin.action(description="Resend selected messages", permissions=["resend"])
    def resend_selected(self, request, queryset):
        alias = queryset.db
        ids = list(queryset.values_list("id", flat=True))
        resent = sum(
            actions.resend(alias, ids[i : i + RESEND_CHUNK])
            for i in range(0, len(ids), RESEND_CHUNK)
        )
        logger.info(
            "admin %s resent %d of %d selected message(s) in %s",
            request.user,
            resent,
            len(ids),
            alias,
        )
        self._report_resend(request, resent, len(ids))

    def _report_resend(self, request, resent: int, selected: int) -> None:
        self.message_user(
            request,
            f"{resent} message(s) resent.",
            messages.SUCCESS if resent else messages.WARNING,
        )
        if selected > resent:
            self.message_user(
                request,
                f"{selected - resent} skipped: only SENDING and DEAD messages are resent.",
                messages.WARNING,
            )

    def resend_view(self, request, object_id):
        """POST from the detail page's Resend button."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_resend_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        resent = actions.resend(obj._state.db, [obj.pk])
        logger.info(
            "admin %s resent message row %s in %s: %d", request.user, obj.pk, obj._state.db, resent
        )
        self._report_resend(request, resent, 1)
        return HttpResponseRedirect(self._url("change", obj.pk, query=request.GET.dict() or None))

    def settle_view(self, request, object_id, verdict):
        """POST from the detail page of a never-confirmed message: a human answers the check-back
        (the producer committed -> confirm and send; it rolled back -> discard)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_resend_permission(request) or verdict not in {"confirm", "discard"}:
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        alias = obj._state.db
        settle = outbox.confirm if verdict == "confirm" else outbox.discard
        changed = settle(obj.message_id, using=alias)
        logger.info(
            "admin %s chose %s for message %s in %s: %d row(s)",
            request.user,
            verdict,
            obj.message_id,
            alias,
            changed,
        )
        if not changed:
            self.message_user(
                request,
                "Nothing changed: the message is no longer waiting for its producer.",
                messages.WARNING,
            )
            return HttpResponseRedirect(
                self._url("change", obj.pk, query=request.GET.dict() or None)
            )
        self.message_user(
            request,
            f"Message {obj.message_id}: {verdict}ed ({changed} consumer row(s)).",
            messages.SUCCESS,
        )
        if verdict == "discard":
            return HttpResponseRedirect(self._url("changelist", query={"service": alias}))
        return HttpResponseRedirect(self._url("change", obj.pk, query=request.GET.dict() or None))

    def resend_dead_view(self, request):
        """Resend every DEAD message of one queue in one service's outbox (clears the dead state)."""
        if not self.has_resend_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = ResendDeadForm(request.POST)
            if form.is_valid():
                alias, queue = form.cleaned_data["service"], form.cleaned_data["queue"]
                try:
                    resent = actions.resend_dead_messages(alias, queue=queue)
                except DatabaseError:
                    logger.warning("resend dead: database %s unavailable", alias, exc_info=True)
                    self.message_user(
                        request,
                        f"The {service_label(alias)} database is unavailable.",
                        messages.ERROR,
                    )
                else:
                    logger.info(
                        "admin %s resent %d dead message(s) of queue %s in %s",
                        request.user,
                        resent,
                        queue,
                        alias,
                    )
                    self.message_user(
                        request,
                        f"{resent} dead message(s) of queue {queue} in {service_label(alias)} resent.",
                        messages.SUCCESS if resent else messages.WARNING,
                    )
                    return HttpResponseRedirect(
                        self._url("changelist", query={"service": alias, "queue": queue})
                    )
        else:
            form = ResendDeadForm(
                initial={
                    "service": request.GET.get("service", DEFAULT_SERVICE),
                    "queue": request.GET.get("queue"),
                }
            )
        preview = self._dead_preview(form)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Resend all dead messages of a queue",
            "form": form,
            "preview": preview,
            "dashboard_url": self._url("dashboard"),
        }
        return TemplateResponse(request, "admin/messaging/message/resend_dead.html", context)

    def _dead_preview(self, form: ResendDeadForm) -> dict | None:
        """How many rows the chosen (service, queue) would resend, for the confirmation page."""
        alias = form.data.get("service") or form.initial.get("service")
        queue = form.data.get("queue") or form.initial.get("queue")
        if alias not in settings.DATABASES or queue not in settings.SERVICE_QUEUES:
            return None
        dead = dead_messages(alias, queue=queue)
        try:
            return {
                "service": service_label(alias),
                "queue": queue,
                "dead": dead.count(),
                "never_confirmed": dead.filter(confirmed_at__isnull=True).count(),
                "changelist_url": self._url(
                    "changelist", query={"service": alias, "queue": queue, "dead": "yes"}
                ),
            }
        except DatabaseError:
            return {"service": service_label(alias), "queue": queue, "unavailable": True}

    def dashboard_view(self, request):
        """Counts by state per queue for every service, and the oldest pending message's age."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        can_resend = self.has_resend_permission(request)
        outboxes = []
        for alias, stats in outbox_stats_by_alias().items():
            outbox = {
                "alias": alias,
                "label": service_label(alias),
                "up": stats is not None,
                "rows": [],
                "changelist_url": self._url("changelist", query={"service": alias}),
            }
            if stats is not None:
                if stats.oldest_pending_at is not None:
                    outbox["oldest_pending_at"] = stats.oldest_pending_at
                    outbox["oldest_pending_age"] = format_age(stats.oldest_pending_seconds(now))
                for queue in stats.queues:
                    dead = stats.count(queue, Status.DEAD)
                    outbox["rows"].append(
                        {
                            "queue": queue,
                            "counts": [
                                (
                                    stats.count(queue, s),
                                    self._url(
                                        "changelist",
                                        query={
                                            "service": alias,
                                            "queue": queue,
                                            "status__exact": s,
                                        },
                                    ),
                                )
                                for s in Status.values
                            ],
                            "dead": dead,
                            "resend_dead_url": self._url(
                                "resend_dead", query={"service": alias, "queue": queue}
                            )
                            if dead and can_resend
                            else "",
                        }
                    )
            outboxes.append(outbox)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Message dashboard",
            "statuses": Status.values,
            "outboxes": outboxes,
            "now": now,
        }
        return TemplateResponse(request, "admin/messaging/message/dashboard.html", context)
