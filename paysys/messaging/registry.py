"""Who consumes which topic, and who answers check-backs. Domains register here; this package
never imports a domain (docs/architecture.md, "Dependency rules")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Consumer:
    name: str
    topic: str
    queue: str
    handler: Callable
    atomic: bool = True  # False: the handler runs outside any transaction (see consumer())
    batch: bool = False  # True: the handler takes a list of deliveries (see consumer())
    database: str = ""  # its alias, when its queue is not a service's own (see consumer())

    @property
    def alias(self) -> str:
        """The consumer's own database: its handler and inbox row commit there together."""
        return self.database or alias_for_queue(self.queue)


_consumers: dict[str, Consumer] = {}
_check_backs: dict[str, Callable[[str], bool | None]] = {}


def alias_for_queue(queue: str) -> str:
    for alias, service in settings.SERVICE_ALIASES.items():
        if service == queue:
            return alias
    raise LookupError(f"no database alias for queue {queue!r}")


def queue_for_alias(alias: str) -> str:
    return settings.SERVICE_ALIASES[alias]


def consumer(
    topic: str,
    *,
    queue: str,
    name: str | None = None,
    atomic: bool = True,
    batch: bool = False,
    alias: str | None = None,
):
    """Register ``handler(message)`` for ``topic``; it runs in ``atomic(using=<queue's alias>)``.

    ``alias``: the consumer's database when its queue is not named after its service (a
    service's second queue, e.g. orders' ``polling``, whose worker is not the payments' one).

    The handler gets a :class:`paysys.messaging.Delivery` (id, topic, payload, send
    count) and must do all its writes in the consumer's alias, so they commit with the inbox row.

    ``atomic=False``: the handler runs outside any transaction and the inbox row is written after
    it returns (a handler that raises is not acknowledged: the message is resent). For handlers
    that commit on their own and are idempotent by themselves, e.g. one running a TCC
    transaction (``tcc.run`` refuses an open transaction; its business key makes a resend resume
    or return the confirmed outcome).

    ``batch=True``: the handler gets the deliveries of a relay batch at once (those not consumed
    before), so it can write them with one statement per table instead of one per message.
    Atomic, ``handler(deliveries)`` runs in one savepoint with their inbox rows and returns
    nothing; if it raises, each delivery is handed again alone (``[delivery]``) in a savepoint of
    its own, so a poison message fails alone and the others are consumed. With ``atomic=False``,
    ``handler(deliveries) -> {delivery.id: error}`` returns the errors (exceptions or texts) of
    those it did not consume (the others are acknowledged); raising fails them all. For handlers
    that batch their own work, e.g. ``tcc.run_many``.
    """
    if alias is not None and alias not in settings.DATABASES:
        raise ValueError(f"consumer alias {alias!r} is not a database alias")

    def register(handler: Callable) -> Callable:
        spec = Consumer(
            name=name or f"{queue}.{handler.__name__}",
            topic=topic,
            queue=queue,
            handler=handler,
            atomic=atomic,
            batch=batch,
            database=alias or "",
        )
        known = _consumers.get(spec.name)
        if known is not None and known.handler.__qualname__ != handler.__qualname__:
            raise ValueError(f"consumer name {spec.name!r} is already taken")
        _consumers[spec.name] = spec
        return handler

    return register


def check_back(name: str):
    """Register ``resolve(business_key) -> True (committed) | False (never committed) | None (undecided)``."""

    def register(resolve: Callable[[str], bool | None]):
        _check_backs[name] = resolve
        return resolve

    return register


def consumers_of(topic: str) -> list[Consumer]:
    return [c for c in _consumers.values() if c.topic == topic]


def get_consumer(name: str) -> Consumer:
    return _consumers[name]


def get_check_back(name: str) -> Callable[[str], bool | None] | None:
    return _check_backs.get(name)
