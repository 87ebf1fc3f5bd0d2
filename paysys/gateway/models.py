from django.db import models


class BankNotify(models.Model):
    """A bank's asynchronous payment notify, stored raw and once (unique bank trade number)."""

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

    class Meta:
        verbose_name = "bank notify"
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="bank_notify_amount_positive")]

    def __str__(self) -> str:
        return f"{self.bank_trade_no} -> {self.out_trade_no}"
