from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "paysys.core"
    label = "core"
    verbose_name = "Core: merchants and payers"

    def ready(self) -> None:
        from paysys.core import checks, participants  # noqa: F401 - checks registers the settings checks
        from paysys.core.schedules import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self)
        participants.register()  # core.agreement, called by name by the TCC framework
