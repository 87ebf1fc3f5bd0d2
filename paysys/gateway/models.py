from django.db import models


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
    duplicates = models.PositiveIntegerField(default=0, help_text="identical notifies received after this one")
    flag = models.CharField(
        max_length=255, blank=True, default="", help_text="why a human must look: how a later notify differed"
    )
    conflicting_body = models.TextField(blank=True, default="", help_text="raw body of the latest differing notify")

    class Meta:
        verbose_name = "bank notify"
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="bank_notify_amount_positive")]

    def __str__(self) -> str:
        return f"{self.bank_trade_no} -> {self.out_trade_no}"
