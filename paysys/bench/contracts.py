"""The benchmarks' message contract, written once (``bench_messaging`` publishes it, the consumer
in ``consumers`` takes it, the message API's tests prepare it over HTTP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from paysys.contracts import Contract


@dataclass(frozen=True)
class BenchPing(Contract):
    """The message ``manage.py bench_messaging`` measures (and the schema tests prepare over
    HTTP). Producer and consumer: core; the consumer only writes its inbox row."""

    TOPIC: ClassVar[str] = "messaging.bench"
    PRODUCER: ClassVar[str] = "default"

    n: int = 0
