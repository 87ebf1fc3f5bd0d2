"""Double-entry bookkeeping: a chart of accounts, and vouchers whose lines balance.

Amounts are integers in minor units (fen) with the voucher's currency. Each line is a debit or
a credit, never both, never negative: the database refuses anything else (CheckConstraint).
That Σ debit = Σ credit per voucher spans rows, which neither SQLite nor MariaDB can constrain;
``accounting.services.voucher_book`` checks it inside the booking transaction, before commit.
"""

from django.db import models
from django.db.models import Q


class AccountCode:
    """The accounts services book to."""

    BANK_CLEARING = "1002"
    MERCHANT_PAYABLE = "2202"
    PAYER_WALLETS = "2241"
    PAYER_POINTS = "2242"
    FEE_INCOME = "6001"


# code, name, kind, normal side. Migration 0002 seeds a frozen copy of this chart;
# ``accounting.services.chart_of_accounts_seed`` restores missing accounts (e.g. after a test flush).
CHART_OF_ACCOUNTS = [
    (AccountCode.BANK_CLEARING, "Bank clearing (money received at the bank)", "asset", "debit"),
    (AccountCode.MERCHANT_PAYABLE, "Merchant payable (owed to merchants)", "liability", "credit"),
    (AccountCode.PAYER_WALLETS, "Payer wallets (balances held for payers)", "liability", "credit"),
    (AccountCode.PAYER_POINTS, "Payer points (points owed to payers)", "liability", "credit"),
    (AccountCode.FEE_INCOME, "Fee income (platform fees)", "revenue", "credit"),
]


class Account(models.Model):
    class Kind(models.TextChoices):
        ASSET = "asset"
        LIABILITY = "liability"
        EQUITY = "equity"
        REVENUE = "revenue"
        EXPENSE = "expense"

    class Side(models.TextChoices):
        DEBIT = "debit"
        CREDIT = "credit"

    code = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    normal_side = models.CharField(
        max_length=6, choices=Side.choices, help_text="the side its balance grows on"
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Voucher(models.Model):
    """One business event booked once: ``source`` names the event (``order.paid:<out_trade_no>``)."""

    source = models.CharField(
        max_length=128, unique=True, help_text="the business event; one voucher each"
    )
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    message_id = models.UUIDField(
        null=True, blank=True, help_text="the message that booked it, for tracing"
    )

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.source


class VoucherLine(models.Model):
    voucher = models.ForeignKey(Voucher, on_delete=models.CASCADE, related_name="lines")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lines")
    debit = models.BigIntegerField(default=0, help_text="minor units")
    credit = models.BigIntegerField(default=0, help_text="minor units")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(debit__gte=0), name="voucherline_debit_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(credit__gte=0), name="voucherline_credit_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(debit__gt=0, credit=0) | Q(debit=0, credit__gt=0),
                name="voucherline_debit_xor_credit",
            ),
        ]

    def __str__(self) -> str:
        side = f"Dr {self.debit}" if self.debit else f"Cr {self.credit}"
        return f"{self.account} {side}"
