from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "paysys.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox: bank simulator"
