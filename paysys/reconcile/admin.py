import json

from django.contrib import admin
from django.utils.html import format_html

from paysys.core.admin_base import ReadOnlyAdmin
from paysys.reconcile.models import ReconcileReport


@admin.register(ReconcileReport)
class ReconcileReportAdmin(ReadOnlyAdmin):
    """Every run, newest (the latest) first; read-only: a run is changed by running another."""

    list_display = [
        "started_at",
        "verdict",
        "inconsistencies",
        "in_flight",
        "stuck",
        "seconds",
        "triggered_by",
    ]
    list_filter = ["ok", "settled", "triggered_by"]
    date_hierarchy = "started_at"
    fields = [
        "started_at",
        "finished_at",
        "seconds",
        "verdict",
        "inconsistencies",
        "triggered_by",
        "problems",
        "in_flight_and_stuck",
        "checked",
    ]
    readonly_fields = fields

    @admin.display(description="verdict", ordering="ok")
    def verdict(self, obj) -> str:
        if not obj.ok:
            return "INCONSISTENT"
        return "consistent, settled" if obj.settled else "consistent (items in flight or stuck)"

    @admin.display(description="seconds")
    def seconds(self, obj) -> str:
        return f"{(obj.finished_at - obj.started_at).total_seconds():.1f}"

    @admin.display(description="in flight")
    def in_flight(self, obj) -> int:
        return sum((obj.summary.get("in_flight") or {}).values())

    @admin.display(description="stuck")
    def stuck(self, obj) -> int:
        return sum((obj.summary.get("stuck") or {}).values())

    @admin.display(description="problems (the first of each check)")
    def problems(self, obj) -> str:
        lines = []
        for check, found in (obj.summary.get("problems") or {}).items():
            lines.append(f"INCONSISTENT {check}: {found['count']}")
            lines += [f"  {detail}" for detail in found["examples"]]
        return format_html("<pre>{}</pre>", "\n".join(lines) or "none")

    @admin.display(description="in flight and stuck")
    def in_flight_and_stuck(self, obj) -> str:
        lines = [
            f"{title}: {what}: {n}"
            for title, key in (("in flight", "in_flight"), ("stuck", "stuck"))
            for what, n in sorted((obj.summary.get(key) or {}).items())
        ]
        return format_html("<pre>{}</pre>", "\n".join(lines) or "none")

    @admin.display(description="checked")
    def checked(self, obj) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.summary.get("checked") or {}, indent=1))
