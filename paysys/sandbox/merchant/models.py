from django.db import models


class MerchantEndpoint(models.Model):
    """A merchant's notification receiver as the merchant set it up: the webhook secret it was
    given by paysys (a real merchant keeps it in its own configuration), and how it should
    misbehave next. Behaviours apply in this order: ``gone`` (410), ``hang_seconds`` (sleep, then
    504; the sender gives up first), ``fail_next`` (answer ``fail_status``, with ``Retry-After``
    if set, and count down), ``delay_ms`` (a slow but good answer)."""

    merchant_id = models.BigIntegerField(unique=True, help_text="the platform's merchant id")
    webhook_secret = models.CharField(max_length=128)
    fail_next = models.PositiveIntegerField(
        default=0, help_text="answer the next N deliveries with fail_status"
    )
    fail_status = models.PositiveSmallIntegerField(default=500)
    retry_after = models.PositiveIntegerField(
        null=True, blank=True, help_text="seconds, sent with failures"
    )
    hang_seconds = models.PositiveIntegerField(
        default=0, help_text="hold every delivery this long, then 504"
    )
    delay_ms = models.PositiveIntegerField(
        default=0, help_text="answer every delivery this late (but well)"
    )
    gone = models.BooleanField(default=False, help_text="answer 410 Gone")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fail_status__gte=300, fail_status__lte=599),
                name="merchant_endpoint_fail_status_error",
            ),
        ]

    def __str__(self) -> str:
        return f"merchant {self.merchant_id} receiver"


class MerchantNotification(models.Model):
    """A notification the merchant accepted and processed: once per ``webhook-id`` (the unique
    constraint is the deduplication; later copies only count)."""

    endpoint = models.ForeignKey(
        MerchantEndpoint, on_delete=models.CASCADE, related_name="notifications"
    )
    webhook_id = models.CharField(max_length=128)
    type = models.CharField(max_length=64, blank=True, default="")
    out_trade_no = models.CharField(max_length=64, blank=True, default="", db_index=True)
    merchant_order_no = models.CharField(max_length=64, blank=True, default="")
    payload = models.JSONField()
    deliveries = models.PositiveIntegerField(
        default=1, help_text="verified copies received (duplicates included)"
    )
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "webhook_id"], name="merchant_notification_once_per_webhook_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.out_trade_no} ({self.webhook_id})"


class MerchantDelivery(models.Model):
    """One HTTP request that reached the simulator, whatever it was: headers, body, whether the
    standardwebhooks verifier accepted it (or why not) and what the simulator answered."""

    endpoint = models.ForeignKey(
        MerchantEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="deliveries",
        help_text="empty: no merchant set up in the simulator could verify it",
    )
    notification = models.ForeignKey(
        MerchantNotification,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="copies",
    )
    path = models.CharField(max_length=256)
    webhook_id = models.CharField(max_length=128, blank=True, default="")
    headers = models.JSONField()
    body = models.TextField()
    verified = models.BooleanField(default=False)
    error = models.CharField(
        max_length=256, blank=True, default="", help_text="why it was not verified"
    )
    duplicate = models.BooleanField(default=False, help_text="a webhook-id already processed")
    behaviour = models.CharField(
        max_length=32, blank=True, default="", help_text="gone / hang / fail / slow, if any"
    )
    status_code = models.PositiveSmallIntegerField(help_text="what the simulator answered")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]  # the endpoint_id index (InnoDB appends the primary key) serves it
        verbose_name_plural = "merchant deliveries"

    def __str__(self) -> str:
        return f"{self.webhook_id or '?'} -> {self.status_code}"
