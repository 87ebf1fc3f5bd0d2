from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The start-up banner and ``make demo``: they drive the platform from outside, so they may
    know every service; core, below them, knows none."""

    name = "paysys.demo"
    label = "demo"
