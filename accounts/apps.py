from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Two services in one app: fund accounts (alias ``funds``) and points accounts (``points``)."""

    name = "accounts"
    verbose_name = "Accounts: funds and points"

    def ready(self):
        from accounts import participants

        participants.register()
