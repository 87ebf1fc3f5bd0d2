"""The reliable message service's public face: ``from paysys.messaging import publish, consumer``.

Life of a message (one outbox row per consumer, in the producer's alias), module by module:

    outbox       publish() (or publish_many()) in the producer's transaction -> SENDING, due now
                 (or prepare() -> PREPARED, confirm() -> SENDING; discard() deletes it)
    kicks        after commit, a relay pass is asked for (a hint: recovery never needs one)
    relay        claim due rows, count the send, set the next due time, send batches to the
                 consumers' queues after commit (one Celery task per batch, not per message)
    consumption  each message in its consumer's transaction with its inbox row; then one
                 acknowledgement UPDATE for the batch                   -> CONSUMED
    recovery     a message still SENDING when due again is resent on the schedule; past it
                 -> DEAD; a stale PREPARED one is resolved by asking its producer (check-back)
    actions      humans resend (admin, ``manage.py resend_dead_messages``)
    selectors    reads

Every status change is a move in ``Message.TRANSITIONS`` (models). The database is the source
of truth: whatever the broker loses, the next relay pass resends.

Names resolve lazily (this package is also a Django app, imported before models are ready).
Domains import from here only, never from the modules behind it.
"""

from __future__ import annotations

from paysys.core.lazy import lazy_exports

_EXPORTS = {
    "publish": "paysys.messaging.outbox",
    "publish_many": "paysys.messaging.outbox",
    "prepare": "paysys.messaging.outbox",
    "confirm": "paysys.messaging.outbox",
    "discard": "paysys.messaging.outbox",
    "UnknownTopic": "paysys.messaging.outbox",
    "DuplicateBusinessKey": "paysys.messaging.outbox",
    "Delivery": "paysys.messaging.consumption",
    "resend": "paysys.messaging.actions",
    "resend_dead_messages": "paysys.messaging.actions",
    "recover_messages": "paysys.messaging.recovery",
    "resend_window": "paysys.messaging.recovery",
    "consumer": "paysys.messaging.registry",
    "check_back": "paysys.messaging.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
