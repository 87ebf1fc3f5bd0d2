from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "paysys.gateway"
    label = "gateway"
    verbose_name = "Gateway: bank notifies"
