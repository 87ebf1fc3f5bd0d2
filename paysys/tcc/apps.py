from django.apps import AppConfig


class TccConfig(AppConfig):
    """TCC coordinator (tables in ``default``) and the branch barrier (a table in every alias)."""

    name = "paysys.tcc"
    label = "tcc"
    verbose_name = "TCC transactions"

    def ready(self):
        from paysys.messaging.metrics import APP_COLLECTORS
        from paysys.tcc.metrics import TccCollector

        if TccCollector not in APP_COLLECTORS:
            APP_COLLECTORS.append(TccCollector)  # served at /metrics
