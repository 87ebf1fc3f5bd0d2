from django.db import models


class BankPayment(models.Model):
    """A payment the simulated bank took, once per platform order (out_trade_no), and the state
    of the bank's asynchronous notify about it.

    Notify states: HELD (test option: wait for a release) -> PENDING (due at ``next_attempt_at``)
    -> ACKED (the platform answered 2xx) or GAVE_UP (``BANK_NOTIFY_SCHEDULE`` exhausted). The
    schedule counts from ``notify_from``: the payment, plus its ``delay`` option, or the release.
    """

    class Status(models.TextChoices):
        SUCCESS = "SUCCESS"

    class NotifyState(models.TextChoices):
        HELD = "HELD"
        PENDING = "PENDING"
        ACKED = "ACKED"
        GAVE_UP = "GAVE_UP"

    bank_trade_no = models.CharField(max_length=64, unique=True)
    out_trade_no = models.CharField(
        max_length=64, unique=True, help_text="the platform's order number"
    )
    amount = models.BigIntegerField(help_text="minor units")
    currency = models.CharField(max_length=3)
    subject = models.CharField(max_length=256, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUCCESS)
    paid_at = models.DateTimeField()

    notify_state = models.CharField(
        max_length=16, choices=NotifyState.choices, default=NotifyState.PENDING
    )
    notify_from = models.DateTimeField(
        null=True, blank=True, help_text="the resend schedule counts from here"
    )
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="when the notify is next due (null: not due)"
    )
    notify_attempts = models.PositiveIntegerField(
        default=0, help_text="scheduled attempts claimed so far"
    )
    duplicates = models.PositiveIntegerField(
        default=0, help_text="test option: extra copies sent after the ack"
    )
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    acked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="bank_payment_amount_positive"
            )
        ]
        indexes = [
            models.Index(fields=["notify_state", "next_attempt_at"], name="bank_payment_notify_due")
        ]

    def __str__(self) -> str:
        return f"{self.bank_trade_no} ({self.out_trade_no}) notify {self.notify_state}"


class BankNotifyAttempt(models.Model):
    """One HTTP POST of a payment's notify, as the bank logged it."""

    payment = models.ForeignKey(BankPayment, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField(help_text="the scheduled attempt it belongs to")
    duplicate = models.BooleanField(
        default=False, help_text="an extra copy sent by the duplicates option"
    )
    url = models.CharField(max_length=512)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    response_excerpt = models.CharField(max_length=512, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.payment_id}: {self.status_code or self.error[:40]}"


class BankRefund(models.Model):
    """A refund the simulated bank was asked for, once per platform refund number. The bank
    decides at once (SUCCESS, or REFUSED with a reason: the payment is unknown, or its refunds
    would pass what was paid) and tells the platform by a signed notify, resent until acknowledged.

    Test triggers, as card networks' test numbers: a reason containing ``[bank:refuse]`` is
    refused, one containing ``[bank:lose-notify]`` is never notified (the platform must ask)."""

    class Status(models.TextChoices):
        SUCCESS = "SUCCESS"
        REFUSED = "REFUSED"

    refund_no = models.CharField(max_length=64, unique=True)
    out_trade_no = models.CharField(max_length=64, db_index=True)
    bank_trade_no = models.CharField(max_length=64, blank=True, default="")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=8, choices=Status.choices)
    refusal = models.CharField(max_length=255, blank=True, default="")
    notify_state = models.CharField(max_length=16, choices=BankPayment.NotifyState.choices)
    notify_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["notify_state", "next_attempt_at"], name="bank_refund_notify_due")
        ]

    def __str__(self) -> str:
        return f"{self.refund_no} {self.status} notify {self.notify_state}"


from paysys.sandbox.merchant.models import MerchantDelivery, MerchantEndpoint, MerchantNotification  # noqa: E402,F401  the merchant simulator
