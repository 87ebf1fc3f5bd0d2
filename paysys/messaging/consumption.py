"""Consumption and acknowledgement: each delivery runs in its consumer's transaction with its
inbox row (a duplicate is a no-op); then one acknowledgement UPDATE for the batch -> CONSUMED."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from paysys.core.sql import insert_objects, retry_deadlock_victim
from paysys.messaging import registry
from paysys.messaging.models import InboxEntry, Message

logger = logging.getLogger(__name__)

Status = Message.Status


@dataclass(frozen=True)
class Delivery:
    """What a consumer's handler receives."""

    id: int
    message_id: uuid.UUID
    topic: str
    payload: dict
    send_count: int


def consume_batch(origin: str, deliveries: Iterable[dict]) -> dict[str, list[int]]:
    """Process each delivery once, with its inbox row; acknowledge the batch.

    Each message runs in a savepoint of one transaction per consumer database, committed once for
    the batch: a message's writes and its inbox row stand or fall together, a handler that raises
    rolls back only its own savepoint (its message stays SENDING with the error), and nothing is
    acknowledged before the commit that makes it durable. A duplicate (inbox row exists) is
    acknowledged without running the handler.
    """
    acked: list[int] = []
    failed: dict[int, str] = {}
    by_alias: dict[str, list[tuple[registry.Consumer, Delivery]]] = {}
    outside: dict[str, list[Delivery]] = {}
    for item in deliveries:
        try:
            spec = registry.get_consumer(item["consumer"])
        except KeyError:
            failed[item["id"]] = f"no consumer {item['consumer']!r} is registered in this worker"
            continue
        delivery = Delivery(
            item["id"],
            uuid.UUID(item["message_id"]),
            item["topic"],
            item["payload"],
            item["send_count"],
        )
        if not spec.atomic:  # outside any transaction (registry.consumer)
            outside.setdefault(spec.name, []).append(delivery)
            continue
        by_alias.setdefault(spec.alias, []).append((spec, delivery))
    for name, batch in outside.items():
        errors = _consume_outside(registry.get_consumer(name), batch)
        failed.update(errors)
        acked.extend(delivery.id for delivery in batch if delivery.id not in errors)
    for alias, batch in by_alias.items():
        done: list[int] = []
        try:
            with transaction.atomic(using=alias):
                for spec, group in _calls(batch):
                    errors = _consume_many(spec, group)
                    failed.update(errors)
                    done.extend(d.id for d in group if d.id not in errors)
                if transaction.get_connection(
                    alias
                ).needs_rollback:  # a savepoint could not be rolled back
                    raise DatabaseError(
                        "the consumer's transaction was lost (e.g. a deadlock rolled it back)"
                    )
        except Exception:  # noqa: BLE001 - the batch did not commit: none of it happened
            # one message must not sink the others (a deadlock victim, a handler that breaks the
            # transaction): go again, each message in a transaction of its own
            logger.warning(
                "batch of %d message(s) in %s did not commit; retrying one by one",
                len(batch),
                alias,
            )
            done = []
            for (
                spec,
                delivery,
            ) in batch:  # all of them: a failure inside a lost batch proves nothing
                failed.pop(delivery.id, None)
                error = _consume_alone(spec, delivery)
                if error:
                    failed[delivery.id] = error
                else:
                    done.append(delivery.id)
        acked.extend(done)
    acknowledge(origin, acked)
    record_failures(origin, failed)
    return {"acked": acked, "failed": sorted(failed)}


def _calls(
    batch: list[tuple[registry.Consumer, Delivery]],
) -> list[tuple[registry.Consumer, list[Delivery]]]:
    """The handler calls of one alias's batch: a batch consumer's deliveries together, any other
    consumer's one by one (in the batch's order)."""
    calls: list[tuple[registry.Consumer, list[Delivery]]] = []
    together: dict[str, list[Delivery]] = {}
    for spec, delivery in batch:
        if not spec.batch:
            calls.append((spec, [delivery]))
        elif spec.name in together:
            together[spec.name].append(delivery)
        else:
            together[spec.name] = [delivery]
            calls.append((spec, together[spec.name]))
    return calls


def _consume_many(spec: registry.Consumer, deliveries: list[Delivery]) -> dict[int, str]:
    """An atomic batch consumer: skip the consumed, write the others' inbox rows in one INSERT
    and hand them to the handler at once, in one savepoint. If anything in it fails, the savepoint
    rolls back and each delivery goes again in a savepoint of its own, so a poison message fails
    alone. Any other consumer's call is one delivery in one savepoint. Returns the errors of the
    deliveries not consumed."""
    if len(deliveries) == 1:
        error = _consume_one(spec, deliveries[0])
        return {deliveries[0].id: error} if error else {}
    try:
        with transaction.atomic(using=spec.alias):
            consumed = _consumed(spec, [d.message_id for d in deliveries])
            todo = [d for d in deliveries if d.message_id not in consumed]
            if todo:
                InboxEntry.objects.using(spec.alias).bulk_create(
                    [
                        InboxEntry(consumer=spec.name, message_id=d.message_id, topic=spec.topic)
                        for d in todo
                    ]
                )
                spec.handler(todo)
        return {}
    except Exception as exc:  # noqa: BLE001 - one by one below finds which message it was
        if transaction.get_connection(spec.alias).needs_rollback:
            raise  # the transaction is lost (a deadlock victim): the caller retries each alone
        logger.info(
            "batch of %d for %s failed (%s); consuming one by one",
            len(deliveries),
            spec.name,
            _describe(exc),
        )
    errors = {}
    for delivery in deliveries:
        if error := _consume_one(spec, delivery):
            errors[delivery.id] = error
    return errors


def _consume_alone(spec: registry.Consumer, delivery: Delivery) -> str:
    try:
        with transaction.atomic(using=spec.alias):
            error = _consume_one(spec, delivery)
            if transaction.get_connection(spec.alias).needs_rollback:
                raise DatabaseError("the consumer's transaction was lost")
        return error
    except Exception as exc:  # noqa: BLE001 - recorded on the message, resent on schedule
        return f"not committed: {_describe(exc)}"


def _consume_outside(spec: registry.Consumer, deliveries: list[Delivery]) -> dict[int, str]:
    """A non-atomic consumer: skip the consumed, run the handler (once over all of them for a
    batch consumer, else once per delivery), then write the inbox rows of those it consumed.
    Returns the errors of the deliveries not consumed."""
    try:
        consumed = _consumed(spec, [d.message_id for d in deliveries])
    except DatabaseError:
        consumed = set()  # the handler is idempotent by itself: run it again
    todo = [d for d in deliveries if d.message_id not in consumed]
    errors: dict[int, str] = {}
    if spec.batch and todo:
        try:
            errors = {
                int(k): _describe(v) if isinstance(v, BaseException) else str(v)
                for k, v in (spec.handler(todo) or {}).items()
            }
        except Exception as exc:  # noqa: BLE001 - recorded on every message, resent on schedule
            errors = {d.id: _describe(exc) for d in todo}
    elif todo:
        for delivery in todo:
            try:
                spec.handler(delivery)
            except Exception as exc:  # noqa: BLE001 - recorded on the message, resent on schedule
                errors[delivery.id] = _describe(exc)
    for delivery_id, error in errors.items():
        logger.warning("consumer %s failed on delivery %s: %s", spec.name, delivery_id, error)
    done = [d for d in todo if d.id not in errors]
    try:
        insert_objects(
            spec.alias,
            [
                InboxEntry(consumer=spec.name, message_id=d.message_id, topic=spec.topic)
                for d in done
            ],
            ignore_existing=True,  # a concurrent delivery wrote the inbox row first
        )
    except (
        DatabaseError
    ) as exc:  # not acknowledged: resent, and the handler's own idempotency absorbs it
        errors.update((d.id, _describe(exc)) for d in done)
    return errors


def _consume_one(spec: registry.Consumer, delivery: Delivery) -> str:
    """Run one handler with its inbox row in a savepoint. Returns "" when consumed (or already
    consumed before), else the error, after rolling back everything this message wrote."""
    try:
        with transaction.atomic(using=spec.alias):
            InboxEntry.objects.using(spec.alias).create(
                consumer=spec.name, message_id=delivery.message_id, topic=spec.topic
            )
            spec.handler([delivery] if spec.batch else delivery)
        return ""
    except IntegrityError as exc:
        if _already_consumed(spec, delivery.message_id):
            return ""
        return _describe(exc)
    except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, never lost
        logger.warning(
            "consumer %s failed on message %s: %s", spec.name, delivery.message_id, _describe(exc)
        )
        return _describe(exc)


def _already_consumed(spec: registry.Consumer, message_id: uuid.UUID) -> bool:
    try:
        return bool(_consumed(spec, [message_id]))
    except DatabaseError:
        return False


def _consumed(spec: registry.Consumer, message_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return set(
        InboxEntry.objects.using(spec.alias)
        .filter(consumer=spec.name, message_id__in=message_ids)
        .values_list("message_id", flat=True)
    )


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"[:2000]


def acknowledge(origin: str, ids: list[int]) -> int:
    """Mark consumed, in one UPDATE. If the producer's database is unreachable the rows stay
    SENDING and are resent; the consumer's inbox turns the resend into a no-op."""
    if not ids:
        return 0
    try:
        # one statement that may run twice (it sets values): a deadlock's victim runs again
        return retry_deadlock_victim(
            origin,
            lambda: (
                Message.objects.using(origin)
                .filter(id__in=ids)
                .transition(
                    Status.CONSUMED, consumed_at=timezone.now(), next_send_at=None, last_error=""
                )
            ),
        )
    except DatabaseError:
        logger.warning(
            "ack of %d message(s) to %s failed; they will be resent and deduplicated",
            len(ids),
            origin,
        )
        return 0


def record_failures(origin: str, failures: dict[int, str]) -> None:
    for message_id, error in failures.items():
        try:
            Message.objects.using(origin).filter(id=message_id, status=Status.SENDING).update(
                last_error=error
            )
        except DatabaseError:
            logger.warning("could not record failure of message %s in %s", message_id, origin)
