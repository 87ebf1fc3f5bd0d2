"""What retention may delete of the message service: consumed outbox rows and their inbox rows.

The rule, which is what keeps a purge from ever letting a message be applied twice:

    A message's inbox row is deleted only together with its outbox row, and only once that row
    has been CONSUMED for the whole retention age (``consumed_at`` older than the cutoff).

Why it is enough: the inbox row is what turns another delivery of the message into a no-op, so
it must outlive every delivery that can still come. A CONSUMED row is never sent again, not by
recovery, not by a human: ``Message.TRANSITIONS`` has no move out of CONSUMED, and the admin's
and ``resend_dead_messages``' resends go through it. Every copy was therefore sent before
``consumed_at`` (or within moments of it, by a relay pass that claimed the row just before), and a queue hands its copies out in order, so once the row has been CONSUMED
for the retention age (a day at the very least: a copy a dying worker had taken comes back
after the broker's one-hour visibility timeout), no copy is left to deliver. A deleted outbox
row cannot be resent at all. Rows that may still be sent are never touched: PREPARED and
SENDING, and DEAD (a human may resend it at any time, and it may well have been applied with
its acknowledgement lost), so their inbox rows stay as long as they do. The one thing assumed: no
broker holds a copy of a message for longer than the retention age.
"""

from __future__ import annotations

from collections import defaultdict

from django.conf import settings

from paysys.core import retention
from paysys.messaging import registry
from paysys.messaging.models import InboxEntry, Message


def register_tables() -> None:
    for alias in settings.DATABASES:
        retention.register(
            retention.PurgeTable(
                label=f"messages ({alias})",
                model_rows=lambda alias=alias: Message.objects.using(alias),
                rows=lambda cutoff, alias=alias: Message.objects.using(alias).filter(
                    status=Message.Status.CONSUMED, consumed_at__lt=cutoff
                ),
                written="created_at",
                fields=("consumer", "message_id"),
                before_delete=delete_inbox_rows,
            )
        )


def delete_inbox_rows(batch: list[tuple], dry_run: bool) -> dict[str, int]:
    """The inbox rows of these (pk, consumer, message_id) outbox rows, in each consumer's own
    database (every database for a consumer no longer registered: nothing else can know it).
    Deleted before the outbox rows: if this fails, the outbox rows stay and the next pass
    tries again; an outbox row is never gone while its inbox row is left behind."""
    by_consumer: dict[str, list] = defaultdict(list)
    for _, consumer, message_id in batch:
        by_consumer[consumer].append(message_id)
    counts: dict[str, int] = {}
    for consumer, message_ids in by_consumer.items():
        try:
            aliases = [registry.get_consumer(consumer).alias]
        except KeyError:
            aliases = list(settings.DATABASES)
        for alias in aliases:
            rows = InboxEntry.objects.using(alias).filter(
                consumer=consumer, message_id__in=message_ids
            )
            label = f"inbox ({alias})"
            counts[label] = counts.get(label, 0) + (rows.count() if dry_run else rows.delete()[0])
    return counts
