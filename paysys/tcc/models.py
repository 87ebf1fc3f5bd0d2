"""TCC tables. The coordinator's (global transactions and their branches) live in ``default``;
the barrier table lives in every participant's alias, next to the business rows it guards
(``paysys.routers``).

Global transaction states (the only moves, see ``GlobalTransaction.TRANSITIONS``):

    TRYING --all tries succeeded--> CONFIRMING --every branch confirmed--> CONFIRMED
       \\--a try failed / deadline--> CANCELLING --every branch cancelled--> CANCELLED

``next_retry_at`` is when recovery next looks at a row: the try deadline while TRYING, the next
phase-two resend while CONFIRMING / CANCELLING, NULL once final or flagged for a human. The
recovery scan reads only due rows through one index.
"""

from __future__ import annotations

from django.db import models

from paysys.core.statuses import StatusQuerySet


class GlobalTransaction(models.Model):
    class Status(models.TextChoices):
        TRYING = "TRYING"
        CONFIRMING = "CONFIRMING"
        CONFIRMED = "CONFIRMED"
        CANCELLING = "CANCELLING"
        CANCELLED = "CANCELLED"

    TRANSITIONS = {
        Status.TRYING: {Status.CONFIRMING, Status.CANCELLING},
        Status.CONFIRMING: {Status.CONFIRMED},
        Status.CANCELLING: {Status.CANCELLED},
        Status.CONFIRMED: set(),
        Status.CANCELLED: set(),
    }
    OPEN = (Status.TRYING, Status.CONFIRMING, Status.CANCELLING)
    PHASE_TWO = (Status.CONFIRMING, Status.CANCELLING)

    xid = models.CharField(max_length=32, unique=True, editable=False)
    name = models.CharField(max_length=64)
    business_key = models.CharField(max_length=128)
    attempt = models.PositiveIntegerField(
        default=1, help_text="1 for the key's first transaction, +1 after each cancel"
    )
    # = business_key from the confirm decision on, NULL otherwise: unique, so the database itself
    # refuses a second confirmed transaction for one key (NULLs never collide)
    confirmed_key = models.CharField(max_length=128, null=True, blank=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRYING)
    deadline = models.DateTimeField(help_text="tries unfinished by then are cancelled by recovery")
    attempts = models.PositiveIntegerField(default=0, help_text="phase-two resends by recovery")
    next_retry_at = models.DateTimeField(null=True, blank=True)
    needs_human = models.BooleanField(default=False)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business_key", "attempt"], name="tcc_one_attempt_number_per_key"
            ),
            models.UniqueConstraint(fields=["confirmed_key"], name="tcc_one_confirmed_per_key"),
        ]
        indexes = [
            models.Index(fields=["status", "next_retry_at"], name="tcc_due"),
            models.Index(fields=["needs_human", "status"], name="tcc_needs_human"),
            models.Index(fields=["created_at"], name="tcc_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.xid} [{self.status}]"


class TransactionBranch(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"  # tried or being tried; phase two not done
        TRY_FAILED = "TRY_FAILED"  # its try failed (last_error says why); its cancel is still sent
        CONFIRMED = "CONFIRMED"
        CANCELLED = "CANCELLED"

    # a failed try is still cancelled (its cancel is an empty cancel), never confirmed
    TRANSITIONS = {
        Status.PENDING: {Status.TRY_FAILED, Status.CONFIRMED, Status.CANCELLED},
        Status.TRY_FAILED: {Status.CANCELLED},
        Status.CONFIRMED: set(),
        Status.CANCELLED: set(),
    }
    UNFINISHED = (Status.PENDING, Status.TRY_FAILED)

    gtx = models.ForeignKey(GlobalTransaction, on_delete=models.CASCADE, related_name="branches")
    branch_no = models.PositiveSmallIntegerField()
    action = models.CharField(
        max_length=100, help_text="registered participant action, e.g. funds.credit"
    )
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="failed phase-two runs")
    last_error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        verbose_name = "branch"
        verbose_name_plural = "branches"
        constraints = [
            models.UniqueConstraint(fields=["gtx", "branch_no"], name="tcc_branch_unique_no")
        ]
        indexes = [
            models.Index(fields=["status", "action"], name="tcc_branch_unfinished")
        ]  # phase-two passes

    def __str__(self) -> str:
        return f"{self.branch_no}: {self.action} [{self.status}]"


class Barrier(models.Model):
    """One row per (xid, branch, op) that reached a participant, committed with its business
    change (DTM's sub-transaction barrier). ``reason`` is the op that wrote the row: a ``try``
    row written by ``cancel`` marks an empty cancel, and refuses that try if it comes later."""

    xid = models.CharField(max_length=32)
    branch = models.PositiveSmallIntegerField()
    op = models.CharField(max_length=8)
    reason = models.CharField(max_length=8)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["xid", "branch", "op"], name="tcc_barrier_unique_op")
        ]
        indexes = [
            models.Index(fields=["created_at"], name="tcc_barrier_created")
        ]  # the retention purge

    def __str__(self) -> str:
        return f"{self.xid}/{self.branch}/{self.op} ({self.reason})"
