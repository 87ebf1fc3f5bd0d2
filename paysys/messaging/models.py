import uuid

from django.db import models

from paysys.core.statuses import StatusQuerySet


class Message(models.Model):
    """The outbox: one row per (message, consumer), in the producer's own database alias.

    ``next_send_at`` is when the row is next due: its next (re)send while SENDING, its
    check-back while PREPARED. The recovery scan reads only due rows through one index.
    """

    class Status(models.TextChoices):
        PREPARED = "PREPARED"
        SENDING = "SENDING"
        CONSUMED = "CONSUMED"
        DEAD = "DEAD"

    # every legal move, in one place. Back to SENDING: confirm (PREPARED, or DEAD after an
    # undecided check-back), a resend (SENDING restarts its count, DEAD is revived). CONSUMED
    # is final: nothing a resend or a late relay pass does can send a consumed message again.
    TRANSITIONS = {
        Status.PREPARED: {Status.SENDING, Status.DEAD},
        Status.SENDING: {Status.SENDING, Status.CONSUMED, Status.DEAD},
        Status.DEAD: {Status.SENDING, Status.CONSUMED},
        Status.CONSUMED: set(),
    }

    message_id = models.UUIDField(default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=100)
    consumer = models.CharField(max_length=100)
    queue = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices)
    send_count = models.PositiveIntegerField(default=0)
    next_send_at = models.DateTimeField(null=True, blank=True)
    business_key = models.CharField(
        max_length=128,
        blank=True,
        default="",
        help_text="two-phase: what a check-back asks about; published: the order it is about (out_trade_no), for tracing",
    )
    check_back = models.CharField(
        max_length=512, blank=True, default="", help_text="registered name or producer URL"
    )
    check_count = models.PositiveIntegerField(default=0)
    # two-phase messages only: "<topic>:<business key>", unique per consumer, so a retried
    # prepare returns the first message instead of announcing one transaction twice
    producer_key = models.CharField(max_length=240, null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message_id", "consumer"], name="message_unique_per_consumer"
            ),
            models.UniqueConstraint(
                fields=["producer_key", "consumer"], name="message_unique_producer_key"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_send_at"], name="message_due"),
            models.Index(fields=["status", "queue"], name="message_state_queue"),
            models.Index(fields=["business_key"], name="message_business_key"),  # admin's trace
        ]

    def __str__(self) -> str:
        return f"{self.topic} -> {self.consumer} [{self.status}]"


class InboxEntry(models.Model):
    """A message a consumer has processed, committed with the consumer's own writes."""

    consumer = models.CharField(max_length=100)
    message_id = models.UUIDField()
    topic = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "inbox entries"
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "message_id"], name="inbox_unique_per_consumer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.consumer} {self.message_id}"
