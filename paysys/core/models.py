from django.core.validators import RegexValidator
from django.db import models


class Merchant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        FROZEN = "frozen"

    name = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    notify_url = models.URLField(max_length=512)
    fee_rate_bp = models.PositiveIntegerField(default=60, help_text="fee in basis points of the amount")
    # API key "psk_<prefix>_<secret>": the prefix finds the row, the SHA-256 of the whole key is
    # compared in constant time; the key itself is shown once and never stored
    api_key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    api_key_hash = models.CharField(max_length=64, editable=False)
    webhook_secret = models.CharField(max_length=128, editable=False)
    # after a rotation the old secret still signs (next to the new one) until the grace ends, so
    # a merchant can deploy the new secret without rejecting a single notification meanwhile
    previous_webhook_secret = models.CharField(max_length=128, blank=True, default="", editable=False)
    previous_webhook_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # per-merchant limits, for a merchant whose volume is known (a large shop, a load test): empty
    # means the platform's defaults (API_RATE_LIMIT, ORDER_MAX_OPEN_PER_MERCHANT)
    api_rate_limit = models.CharField(max_length=32, blank=True, default="", validators=[RegexValidator(
                                          r"^[1-9][0-9]{0,8}/(s|sec|m|min|h|hour|d|day)$", "like 6000/min")],
                                      help_text="requests per API key, e.g. 6000/min; empty: API_RATE_LIMIT")
    max_open_orders = models.PositiveIntegerField(null=True, blank=True,
                                                  help_text="open unpaid orders at once; empty: ORDER_MAX_OPEN_PER_MERCHANT")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(fee_rate_bp__lte=10_000), name="merchant_fee_rate_bp_lte_10000"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Payer(models.Model):
    name = models.CharField(max_length=128)
    # the payer's consent for balance payments: SHA-256 of a token shown once and never stored
    # (empty: no token issued, balance payments refused)
    payer_token_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"
