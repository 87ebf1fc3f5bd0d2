"""Admin bases for rows that only services write (STYLE: store first, change through services)."""

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html


class RecordAdmin(admin.ModelAdmin):
    """Viewable and filterable, never added or deleted by hand; actions call services."""

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(RecordAdmin):
    """Not even an action changes these rows through the change form."""

    def has_change_permission(self, request, obj=None):
        return False


def action_needing(permission: str, action):
    """``action``, an admin action a third-party admin declared for anyone who may view the list,
    needing ``has_<permission>_permission`` instead (what ``@admin.action(permissions=...)`` says)."""

    def needing(modeladmin, request, queryset):
        return action(modeladmin, request, queryset)

    return admin.action(permissions=[permission], description=action.short_description)(needing)


class AgeFilter(admin.SimpleListFilter):
    """ "Older than 1 minute / 1 hour / 1 day", on ``created_at``."""

    title = "age"
    parameter_name = "older_than"
    AGES = {
        "1m": ("Older than 1 minute", timedelta(minutes=1)),
        "1h": ("Older than 1 hour", timedelta(hours=1)),
        "1d": ("Older than 1 day", timedelta(days=1)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.AGES.items()]

    def queryset(self, request, queryset):
        if self.value() in self.AGES:
            return queryset.filter(created_at__lte=timezone.now() - self.AGES[self.value()][1])
        return queryset


def format_age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def linked(field: str, *, to: str = "trace", description: str | None = None):
    """A list or detail column showing ``field`` as a link (ids link to their objects):
    ``to="trace"`` the payment's trace (``/admin/trace/?q=``); ``"app_model"`` that object's page
    (the field holds its primary key, e.g. a merchant_id in another database)."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def column(obj) -> str:
        value = getattr(obj, field)
        if value in (None, ""):
            return "-"
        if to == "trace":
            url = f"{reverse('admin-trace')}?{urlencode({'q': value})}"
        else:
            url = reverse(f"admin:{to}_change", args=[value])
        return format_html('<a href="{}">{}</a>', url, value)

    column.__name__ = f"{field}_link"
    return column
