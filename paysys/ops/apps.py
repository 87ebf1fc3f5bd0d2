from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "paysys.ops"
    label = "ops"
    verbose_name = "Operations"
