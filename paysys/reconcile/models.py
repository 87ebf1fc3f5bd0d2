from django.db import models


class ReconcileReport(models.Model):
    """One run of ``manage.py reconcile`` (by hand or beat's daily task), kept for the operator.

    Lives in ``default``: reconcile is an operations tool of the core, not a service."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField(
        help_text="consistent: no invariant broken (in-flight and stuck items do not count)"
    )
    settled = models.BooleanField(
        default=False, help_text="consistent, and nothing in flight or stuck"
    )
    inconsistencies = models.PositiveIntegerField(
        default=0, help_text="problems found, all checks together"
    )
    summary = models.JSONField(default=dict, help_text="the report as `reconcile --json` prints it")
    triggered_by = models.CharField(max_length=64, default="command")

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["started_at"], name="reconcile_report_started")]

    def __str__(self) -> str:
        verdict = "consistent" if self.ok else f"{self.inconsistencies} inconsistencies"
        return f"reconcile {self.started_at:%Y-%m-%d %H:%M:%S}: {verdict}"
