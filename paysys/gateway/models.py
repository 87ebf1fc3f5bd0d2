from django.db import models

from paysys.core.statuses import StatusQuerySet, sources_of


class BankNotify(models.Model):
    """A bank's asynchronous payment notify, stored raw and once (unique bank trade number).

    A later notify with the same bank trade number but other content is acknowledged (the bank
    must stop resending) without touching the stored data, and the row is flagged for a human.
    """

    bank_trade_no = models.CharField(max_length=64, unique=True)
    out_trade_no = models.CharField(max_length=64, db_index=True)
    amount = models.BigIntegerField(help_text="minor units, as the bank reported it")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16)
    paid_at = models.DateTimeField()
    raw_body = models.TextField()
    signature = models.CharField(max_length=128)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    duplicates = models.PositiveIntegerField(
        default=0, help_text="identical notifies received after this one"
    )
    flag = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="why a human must look: how a later notify differed",
    )
    conflicting_body = models.TextField(
        blank=True, default="", help_text="raw body of the latest differing notify"
    )

    class Meta:
        verbose_name = "bank notify"
        verbose_name_plural = "bank notifies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="bank_notify_amount_positive"
            )
        ]

    def __str__(self) -> str:
        return f"{self.bank_trade_no} -> {self.out_trade_no}"


class BankNotifyReceipt(models.Model):
    """Every correctly signed notify body, stored before anything reads it (dj-stripe's webhook
    trigger): one the gateway cannot read stays here REJECTED with the reason, for a human to see
    and, after a fix, to reprocess. The body is kept as the exact bytes that were signed."""

    class State(models.TextChoices):
        RECEIVED = "RECEIVED"  # stored, not read yet (or the process died while reading it)
        PROCESSED = "PROCESSED"  # its notify is stored (new or a duplicate)
        REJECTED = "REJECTED"  # unreadable: see error

    # every legal move, in one place; PROCESSED is final
    TRANSITIONS = {
        State.RECEIVED: {State.PROCESSED, State.REJECTED},
        State.REJECTED: {State.PROCESSED, State.REJECTED},
        State.PROCESSED: set(),
    }
    STATUS_FIELD = "state"

    raw_body = models.BinaryField()
    signature = models.CharField(max_length=128)
    state = models.CharField(max_length=10, choices=State.choices, default=State.RECEIVED)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="times it was read")
    bank_notify = models.ForeignKey(
        BankNotify,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="receipts",
        help_text="the notify it was read as (several receipts: the bank repeated it)",
    )
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        verbose_name = "bank notify receipt"
        indexes = [models.Index(fields=["state", "received_at"], name="bank_receipt_state")]

    def __str__(self) -> str:
        return f"receipt #{self.pk} [{self.state}]"

    @classmethod
    def sources_of(cls, new: str) -> list[str]:
        """The states a receipt may move to ``new`` from."""
        return sources_of(cls, new)
