from django.apps import AppConfig


class TccConfig(AppConfig):
    """TCC coordinator (tables in ``default``) and the branch barrier (a table in every alias)."""

    name = "paysys.tcc"
    label = "tcc"
    verbose_name = "TCC transactions"
