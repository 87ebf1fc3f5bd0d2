from django.apps import AppConfig


class BenchConfig(AppConfig):
    """The benchmark commands; see the package's docstring for what loads when."""

    name = "paysys.bench"
    label = "bench"
    verbose_name = "Benchmarks"
