from paysys.bench.contracts import BenchPing
from paysys.messaging import consumer


@consumer(BenchPing.TOPIC, queue="core", name="core.bench_noop")
def bench_noop(message) -> None:
    """The consumer `manage.py bench_messaging` measures: the inbox row is its only write."""
