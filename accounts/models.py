"""Fund accounts (alias ``funds``) and points accounts (alias ``points``): two services, one app.

The router picks the alias by model name ("Fund..." -> funds, "Points..." -> points), so each
service's rows live in its own database and each fails alone. Owners (merchants, payers) live in
core's database: they are referenced by plain id, never by foreign key.

A TCC try reserves, its confirm posts, its cancel releases:

    credit:  try  pending_in += a                  confirm  pending_in -= a, balance += a
    debit:   try  frozen     += a  (if available)  confirm  frozen     -= a, balance -= a
    award:   try  pending    += p                  confirm  pending    -= p, balance += p
    cancel:  undoes the try's reservation

available = balance - frozen. The database refuses any row where it, or any column, would be
negative (CheckConstraint), whatever code writes it. Every change writes an entry (HOLD for a
reservation, POSTED for a balance move, RELEASED for a cancelled reservation), so the balance is
the sum of POSTED entries and frozen / pending_in the sum of open holds.
"""

from django.db import models
from django.db.models import F, Q


class EntryKind(models.TextChoices):
    HOLD = "hold", "hold (reserved by a try)"
    POSTED = "posted", "posted (moved the balance)"
    RELEASED = "released", "released (a cancelled try's hold)"


class Direction(models.TextChoices):
    CREDIT = "credit"
    DEBIT = "debit"


class FundAccount(models.Model):
    class Owner(models.TextChoices):
        MERCHANT = "merchant"
        PAYER = "payer", "payer (wallet)"

    owner_type = models.CharField(max_length=8, choices=Owner.choices)
    owner_id = models.BigIntegerField(
        help_text="core merchant or payer id (another database: no foreign key)"
    )
    currency = models.CharField(max_length=3)
    balance = models.BigIntegerField(default=0, help_text="minor units")
    frozen = models.BigIntegerField(
        default=0, help_text="outgoing, reserved by debit tries (minor units)"
    )
    pending_in = models.BigIntegerField(
        default=0, help_text="incoming, reserved by credit tries (minor units)"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner_type", "owner_id", "currency"], name="fundaccount_unique_owner"
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="fundaccount_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(frozen__gte=0), name="fundaccount_frozen_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(pending_in__gte=0), name="fundaccount_pending_in_not_negative"
            ),
            # available = balance - frozen never negative
            models.CheckConstraint(
                condition=Q(balance__gte=F("frozen")), name="fundaccount_available_not_negative"
            ),
        ]
        permissions = [("credit_wallet", "Can credit a payer's wallet by hand")]

    def __str__(self) -> str:
        return f"{self.owner_type} #{self.owner_id} {self.currency}"

    @property
    def available(self) -> int:
        return self.balance - self.frozen


class FundEntry(models.Model):
    """One change of a fund account, written in the transaction that makes it."""

    account = models.ForeignKey(FundAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=8, choices=EntryKind.choices)
    direction = models.CharField(max_length=6, choices=Direction.choices)
    amount = models.BigIntegerField(help_text="minor units, > 0")
    balance_after = models.BigIntegerField(help_text="the account's balance after this change")
    xid = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        help_text="the TCC transaction; empty for a manual credit",
    )
    out_trade_no = models.CharField(max_length=32, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    created_by = models.CharField(
        max_length=150, blank=True, default="", help_text="who, for a manual change"
    )
    request_key = models.CharField(
        max_length=64,
        null=True,
        blank=True,
        unique=True,
        help_text="a manual credit's idempotency key: the same request submitted twice credits once",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "fund entries"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="fundentry_amount_positive"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="fundentry_balance_after_not_negative"
            ),
            # one hold, one post, one release per transaction and direction on an account: a
            # second application of the same phase is refused even if the barrier were bypassed
            # (NULL xids, i.e. manual credits, are distinct in a unique index)
            models.UniqueConstraint(
                fields=["account", "xid", "direction", "kind"], name="fundentry_unique_phase"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "kind", "-id"], name="fundentry_account_recent"),
            models.Index(
                fields=["out_trade_no"], name="fundentry_order"
            ),  # reconcile: an order's entries
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.direction} {self.amount} on {self.account_id}"


class PointsAccount(models.Model):
    payer_id = models.BigIntegerField(
        unique=True, help_text="core payer id (another database: no foreign key)"
    )
    balance = models.BigIntegerField(default=0)
    pending = models.BigIntegerField(default=0, help_text="reserved by award tries")
    frozen = models.BigIntegerField(
        default=0, db_default=0, help_text="outgoing, reserved by refunds' reversal tries"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="pointsaccount_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(pending__gte=0), name="pointsaccount_pending_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(frozen__gte=0), name="pointsaccount_frozen_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=F("frozen")), name="pointsaccount_available_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"payer #{self.payer_id} points"


class PointsEntry(models.Model):
    account = models.ForeignKey(PointsAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=8, choices=EntryKind.choices)
    # credit: an award (balance grows); debit: a refund's reversal (balance shrinks, via frozen)
    direction = models.CharField(
        max_length=6,
        choices=Direction.choices,
        default=Direction.CREDIT,
        db_default=Direction.CREDIT,
    )
    points = models.BigIntegerField(help_text="> 0")
    balance_after = models.BigIntegerField()
    xid = models.CharField(max_length=64, null=True, blank=True)
    out_trade_no = models.CharField(max_length=32, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "points entries"
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="pointsentry_points_positive"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="pointsentry_balance_after_not_negative"
            ),
            models.UniqueConstraint(
                fields=["account", "xid", "kind"], name="pointsentry_unique_phase"
            ),
        ]
        indexes = [
            models.Index(fields=["out_trade_no"], name="pointsentry_order")
        ]  # reconcile: an order's entries

    def __str__(self) -> str:
        return f"{self.kind} {self.points} on {self.account_id}"
