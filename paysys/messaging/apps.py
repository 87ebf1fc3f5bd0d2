from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class MessagingConfig(AppConfig):
    name = "paysys.messaging"
    label = "messaging"
    verbose_name = "Reliable messages"

    def ready(self) -> None:
        # every app's consumers.py registers its handlers, in producers and consumers alike:
        # publish() fans a topic out to one outbox row per registered consumer
        autodiscover_modules("consumers")

        from paysys.messaging import retention

        retention.register_tables()  # consumed messages and their inbox rows (manage.py purge_history)
