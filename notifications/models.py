"""Best-effort merchant notification: endpoints, notify records, attempts (docs/architecture.md).

All three live in the ``notifications`` alias. Merchants and orders live elsewhere, so they are
referenced by plain ids (``merchant_id``, ``order_id``), never by foreign key.

Life of a record (transitions in ``Notification.TRANSITIONS``, applied by ``notifications.services``):

    order.paid consumed        -> PENDING, due now (next_attempt_at)
    an attempt answers 2xx     -> SUCCEEDED
    an attempt fails           -> PENDING, due after the next step of the schedule (± jitter,
                                  or the merchant's Retry-After, capped)
    the last step failed, 410, -> FAILED, waiting for a human (resend / recover)
    or the endpoint is disabled
    resend / recover           -> PENDING, due now, schedule from the start, same webhook-id
"""

from django.db import models
from django.db.models import Q

from paysys.core.statuses import StatusQuerySet


class Endpoint(models.Model):
    """Where a merchant receives notifications: one row per (merchant, URL).

    ``410 Gone`` disables it until a human (or the merchant) re-enables it; a disabled endpoint
    gets no requests, its due records fail with the reason. ``consecutive_failures`` and the last
    times are what admin and metrics show as endpoint health."""

    merchant_id = models.BigIntegerField(help_text="paysys.core Merchant id (another database)")
    url = models.CharField(max_length=512)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant_id", "url"], name="notify_endpoint_unique_url"
            )
        ]

    def __str__(self) -> str:
        return f"merchant #{self.merchant_id} {self.url}"

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None


class MerchantSchedule(models.Model):
    """A merchant's own retry schedule (seconds to wait after attempt 1, 2, ...; the first
    attempt is always immediate). Without a row, ``settings.NOTIFY_RETRY_SCHEDULE`` applies."""

    merchant_id = models.BigIntegerField(
        unique=True, help_text="paysys.core Merchant id (another database)"
    )
    retry_schedule = models.JSONField(
        help_text="e.g. [15, 60, 300]: waits in seconds after each failed attempt"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"merchant #{self.merchant_id}: {self.retry_schedule}"


class Notification(models.Model):
    """One event told to one merchant: unique per (order, event type). The body and the
    ``webhook_id`` are fixed when the record is created and identical on every attempt, so the
    merchant deduplicates by ``webhook-id`` and verifies the very bytes that were signed."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"

    # every legal move, in one place (a resend of a SUCCEEDED record sends it again)
    TRANSITIONS = {
        Status.PENDING: {Status.SUCCEEDED, Status.FAILED, Status.PENDING},
        Status.SUCCEEDED: {
            Status.PENDING,
            Status.SUCCEEDED,
        },  # a second, concurrent delivery's success counts its attempt
        Status.FAILED: {Status.PENDING, Status.SUCCEEDED},
    }

    webhook_id = models.CharField(
        max_length=40, unique=True, help_text="msg_…: the same on every attempt"
    )
    merchant_id = models.BigIntegerField(help_text="paysys.core Merchant id (another database)")
    order_id = models.BigIntegerField(help_text="orders Order id (another database)")
    out_trade_no = models.CharField(max_length=64)
    merchant_order_no = models.CharField(max_length=64)
    event_type = models.CharField(max_length=64)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="notifications")
    url = models.CharField(max_length=512, help_text="where it is sent (the endpoint's URL)")
    body = models.TextField(help_text="the JSON body exactly as sent and signed")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveIntegerField(
        default=0, help_text="HTTP tries so far, every one logged"
    )
    step = models.PositiveIntegerField(
        default=0, help_text="position in the retry schedule; resend restarts it"
    )
    # when it is next due while PENDING (also pushed forward while an attempt is in flight, so a
    # killed worker's claim expires and another worker delivers it); NULL otherwise
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    message_id = models.UUIDField(
        null=True, blank=True, help_text="the order.paid message, for tracing"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["order_id", "event_type"], name="notification_unique_per_order_event"
            ),
            models.CheckConstraint(
                condition=Q(status="PENDING") | Q(next_attempt_at__isnull=True),
                name="notification_due_only_pending",
            ),
        ]
        indexes = [
            # the due scan: in due order, skipping endpoints at their limit within the index
            models.Index(fields=["next_attempt_at", "endpoint"], name="notification_due"),
            models.Index(
                fields=["merchant_id", "status", "created_at"], name="notification_merchant_status"
            ),
            models.Index(fields=["merchant_id", "created_at"], name="notification_merchant_time"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.event_type} {self.out_trade_no} -> merchant #{self.merchant_id} [{self.status}]"
        )


class Attempt(models.Model):
    """One HTTP try (or one refused before connecting): what was sent and what came back."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"  # 2xx
        FAILED = "failed"  # answered non-2xx (3xx included), or timeout / connection error
        REFUSED = "refused"  # never connected: the target is not allowed (SSRF guard) or invalid

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        RESEND = "resend"

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="attempts"
    )
    merchant_id = models.BigIntegerField(
        help_text="copied from the record: per-merchant success rates without a join"
    )
    number = models.PositiveIntegerField(help_text="1 for the first try of the record")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.SCHEDULE)
    started_at = models.DateTimeField()
    url = models.CharField(max_length=512)
    address = models.CharField(
        max_length=64, blank=True, default="", help_text="the IP actually connected to"
    )
    request_headers = models.JSONField()
    request_body = models.TextField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(
        blank=True, default="", help_text="first 2 KB of the response body"
    )
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    # timeout | connect | refused_target | redirect | http_status | gone | tls | protocol | invalid_url
    error_class = models.CharField(max_length=32, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["notification_id", "number"]
        indexes = [
            models.Index(fields=["started_at", "outcome"], name="attempt_time_outcome"),
            models.Index(fields=["merchant_id", "started_at"], name="attempt_merchant_time"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.notification_id}: {self.outcome}"
