from paysys.messaging.registry import consumer

BENCH_TOPIC = "messaging.bench"


@consumer(BENCH_TOPIC, queue="core", name="core.bench_noop")
def bench_noop(message) -> None:
    """The consumer `manage.py bench_messaging` measures: the inbox row is its only write."""
