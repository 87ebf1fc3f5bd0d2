import uuid

from django.db import models


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

    message_id = models.UUIDField(default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=100)
    consumer = models.CharField(max_length=100)
    queue = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices)
    send_count = models.PositiveIntegerField(default=0)
    next_send_at = models.DateTimeField(null=True, blank=True)
    business_key = models.CharField(max_length=128, blank=True, default="", help_text="what a check-back asks about")
    check_back = models.CharField(max_length=512, blank=True, default="", help_text="registered name or producer URL")
    check_count = models.PositiveIntegerField(default=0)
    # two-phase messages only: "<topic>:<business key>", unique per consumer, so a retried
    # prepare returns the first message instead of announcing one transaction twice
    producer_key = models.CharField(max_length=240, null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message_id", "consumer"], name="message_unique_per_consumer"),
            models.UniqueConstraint(fields=["producer_key", "consumer"], name="message_unique_producer_key"),
        ]
        indexes = [
            models.Index(fields=["status", "next_send_at"], name="message_due"),
            models.Index(fields=["status", "queue"], name="message_state_queue"),
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
        constraints = [models.UniqueConstraint(fields=["consumer", "message_id"], name="inbox_unique_per_consumer")]
