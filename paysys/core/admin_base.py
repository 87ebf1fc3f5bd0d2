"""Admin bases for rows that only services write (STYLE: store first, change through services)."""

from django.contrib import admin


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
