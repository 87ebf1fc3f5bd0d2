from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Merchant notifications"

    def ready(self) -> None:
        from notifications import selectors
        from notifications.models import Attempt
        from paysys.core import retention

        # an attempt is a log line: its record (status, body, webhook-id) stays, so resends and
        # the merchant API work as before; attempt numbers come from the record's count
        retention.register(
            retention.PurgeTable(
                label="notification attempts",
                model_rows=lambda: Attempt.objects.using(selectors.ALIAS),
                rows=selectors.attempts_started_before,
                written="started_at",
            )
        )
