from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Merchant notifications"

    def ready(self) -> None:
        from notifications.metrics import NotificationCollector
        from paysys.messaging.metrics import APP_COLLECTORS

        if NotificationCollector not in APP_COLLECTORS:
            APP_COLLECTORS.append(NotificationCollector)  # served at /metrics
