from datetime import date

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone


class Merchant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        FROZEN = "frozen"

    name = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    notify_url = models.URLField(max_length=512)
    fee_rate_bp = models.PositiveIntegerField(
        default=60, help_text="fee in basis points of the amount"
    )
    # API key "psk_<prefix>_<secret>": the prefix finds the row, the SHA-256 of the whole key is
    # compared in constant time; the key itself is shown once and never stored
    api_key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    api_key_hash = models.CharField(max_length=64, editable=False)
    webhook_secret = models.CharField(max_length=128, editable=False)
    # after a rotation the old secret still signs (next to the new one) until the grace ends, so
    # a merchant can deploy the new secret without rejecting a single notification meanwhile
    previous_webhook_secret = models.CharField(
        max_length=128, blank=True, default="", editable=False
    )
    previous_webhook_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # per-merchant limits, for a merchant whose volume is known (a large shop, a load test): empty
    # means the platform's defaults (API_RATE_LIMIT, ORDER_MAX_OPEN_PER_MERCHANT)
    api_rate_limit = models.CharField(
        max_length=32,
        blank=True,
        default="",
        validators=[
            RegexValidator(r"^[1-9][0-9]{0,8}/(s|sec|m|min|h|hour|d|day)$", "like 6000/min")
        ],
        help_text="requests per API key, e.g. 6000/min; empty: API_RATE_LIMIT",
    )
    max_open_orders = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="open unpaid orders at once; empty: ORDER_MAX_OPEN_PER_MERCHANT",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fee_rate_bp__lte=10_000), name="merchant_fee_rate_bp_lte_10000"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Payer(models.Model):
    name = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"


def _empty_or_positive(field: str) -> models.Q:
    return models.Q(**{f"{field}__isnull": True}) | models.Q(**{f"{field}__gt": 0})


class PayerAgreement(models.Model):
    """A payer's consent that ONE merchant may charge its wallet (balance payments), within
    optional limits, until revoked: what Alipay's agreement payments and card-on-file mandates
    are. Its token is the ``payer_token`` of ``POST /api/v1/orders/{no}/pay``; any other
    merchant presenting it is refused.

    Revoking is final (the row stays as history: who, when); a new agreement for the same payer
    and merchant is a new row. Reissuing gives the agreement a new token, the old one stops working.
    """

    payer = models.ForeignKey(Payer, on_delete=models.PROTECT, related_name="agreements")
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="payer_agreements"
    )
    # token "ppt_<prefix>_<secret>": the prefix finds the row, the SHA-256 of the whole token is
    # compared in constant time; the token itself is shown once and never stored (as API keys)
    token_prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    currency = models.CharField(
        max_length=3, help_text="the limits' currency; payments in another are refused"
    )
    per_payment_limit = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="the most one payment may take (minor units); empty: no limit",
    )
    daily_limit = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="the most the payments of one day (in TIME_ZONE) may take together (minor units); empty: no limit",
    )
    # True while in force, NULL once revoked: unique with (payer, merchant), so at most one
    # agreement per pair is in force while revoked ones stay as history (NULLs never collide; a
    # partial unique index would say it better, but MariaDB has none)
    in_force = models.BooleanField(null=True, default=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(
        max_length=150, help_text="who issued it: command:<user> or admin:<user>"
    )
    token_issued_at = models.DateTimeField(
        help_text="when the current token was issued (at creation or reissue)"
    )
    token_issued_by = models.CharField(max_length=150)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["payer", "merchant", "in_force"], name="payeragreement_one_in_force"
            ),
            models.CheckConstraint(
                condition=_empty_or_positive("per_payment_limit"),
                name="payeragreement_per_payment_limit_positive",
            ),
            models.CheckConstraint(
                condition=_empty_or_positive("daily_limit"),
                name="payeragreement_daily_limit_positive",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(in_force=True, revoked_at__isnull=True)
                    | models.Q(in_force__isnull=True, revoked_at__isnull=False)
                ),
                name="payeragreement_in_force_until_revoked",
            ),
        ]

    def __str__(self) -> str:
        return f"agreement #{self.pk}: payer #{self.payer_id} with merchant #{self.merchant_id}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class PayerAgreementDay(models.Model):
    """What an agreement's balance payments of one day add up to: counted by the payment's TCC
    try (under the agreement's row lock, against its daily limit), uncounted by its cancel."""

    agreement = models.ForeignKey(PayerAgreement, on_delete=models.PROTECT, related_name="days")
    day = models.DateField()
    amount = models.BigIntegerField(default=0, help_text="minor units of the agreement's currency")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agreement", "day"], name="payeragreementday_unique_day"
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gte=0), name="payeragreementday_amount_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"agreement #{self.agreement_id} on {self.day}: {self.amount}"

    @staticmethod
    def today() -> date:
        """The day a daily limit counts in: today in TIME_ZONE."""
        return timezone.localdate()
