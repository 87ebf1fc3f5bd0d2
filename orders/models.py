from __future__ import annotations

from collections import defaultdict
from functools import reduce
from operator import or_

from django.db import models
from django.db.models import Expression, F, Q
from django.utils import timezone

from paysys.core.errors import Conflict
from paysys.core.money import MAX_AMOUNT
from paysys.core.statuses import IllegalTransition, StatusQuerySet, check_transition  # noqa: F401 (importers)


class PayMethod(models.TextChoices):
    BANK = "bank"
    BALANCE = "balance"


class OrderNotPayable(Conflict):
    code = "order_not_payable"


class Order(models.Model):
    class Status(models.TextChoices):
        CREATED = "CREATED"
        PAYING = "PAYING"
        SUCCESS = "SUCCESS"
        CLOSED = "CLOSED"
        # no code moves an order here today; it stays because it is part of the published API
        # (the order status enum of the OpenAPI schema, a status filter value) and of the stored
        # choices, so a client or a row that has it keeps meaning the same
        FAILED = "FAILED"
        # paid, then given back in part or in full (orders.refunds): still paid orders
        PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
        REFUNDED = "REFUNDED"

    # every legal move, in one place; PAYING -> CREATED is a TCC cancel releasing the order
    TRANSITIONS = {
        Status.CREATED: {Status.PAYING, Status.CLOSED, Status.FAILED},
        Status.PAYING: {Status.SUCCESS, Status.CREATED, Status.FAILED},
        Status.SUCCESS: {Status.PARTIALLY_REFUNDED, Status.REFUNDED},
        Status.PARTIALLY_REFUNDED: {Status.PARTIALLY_REFUNDED, Status.REFUNDED},
        Status.REFUNDED: set(),
        Status.CLOSED: set(),
        Status.FAILED: set(),
    }
    # the statuses of an order that was paid (money came in; some may have gone back)
    PAID_STATUSES = (Status.SUCCESS, Status.PARTIALLY_REFUNDED, Status.REFUNDED)

    out_trade_no = models.CharField(
        max_length=32, unique=True, help_text="the platform's order number at the bank"
    )
    merchant_id = models.BigIntegerField(
        help_text="core merchant id (another database: no foreign key)"
    )
    merchant_order_no = models.CharField(max_length=64)
    amount = models.BigIntegerField(help_text="minor units")
    currency = models.CharField(max_length=3)
    subject = models.CharField(max_length=128)
    payer_id = models.BigIntegerField()
    notify_url = models.URLField(max_length=512, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATED)
    bank_trade_no = models.CharField(max_length=64, blank=True, default="")
    # the TCC transaction holding (PAYING) or having paid (SUCCESS) the order, and how it pays
    tcc_xid = models.CharField(max_length=64, blank=True, default="")
    pay_method = models.CharField(max_length=8, choices=PayMethod.choices, blank=True, default="")
    expires_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    # order polling: when to ask the bank next while no notify has arrived (null: stop asking)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_count = models.PositiveIntegerField(default=0)
    # refunds (orders.refunds): given back (SUCCEEDED), and reserved by refunds still PENDING;
    # together never more than the amount paid (the database refuses it)
    refunded_amount = models.BigIntegerField(
        default=0, db_default=0, help_text="minor units given back by succeeded refunds"
    )
    refunding_amount = models.BigIntegerField(
        default=0, db_default=0, help_text="minor units reserved by pending refunds"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant_id", "merchant_order_no"], name="order_unique_merchant_order_no"
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gte=1, amount__lte=MAX_AMOUNT),
                name="order_amount_in_range",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    refunded_amount__gte=0,
                    refunding_amount__gte=0,
                    amount__gte=F("refunded_amount") + F("refunding_amount"),
                ),
                name="order_refunds_within_amount",
            ),
        ]
        indexes = [
            models.Index(fields=["merchant_id", "-id"], name="order_merchant_recent"),
            models.Index(fields=["status", "expires_at"], name="order_status_expiry"),
            models.Index(fields=["status", "next_poll_at"], name="order_status_poll"),
        ]

    def __str__(self) -> str:
        return f"{self.out_trade_no} {self.status}"

    @classmethod
    def check_transition(cls, current: str, new: str) -> None:
        check_transition(cls, current, new)

    def transition(self, new: str, **changes) -> None:
        """Move to ``new`` if legal and if the row still holds the status this object read.

        The update is conditional on the old status, so two workers cannot both make the same move.
        """
        Order.transition_many(new, [(self, changes)])

    @classmethod
    def transition_many(cls, new: str, moves: list[tuple[Order, dict]]) -> None:
        """:meth:`transition` of several orders (each with its own changes) in ONE UPDATE.

        Every move is checked against TRANSITIONS first; the UPDATE is conditional on each row's
        old status and raises unless every row moved (one moved concurrently: the caller's
        transaction must roll back). A field whose value differs between orders is set by a
        CASE on the primary key. The objects get the new values, as with :meth:`transition`.
        """
        if not moves:
            return
        if len({order.pk for order, _ in moves}) != len(moves):
            raise ValueError("an order can make one move per transition_many call")
        now = timezone.now()
        rows, by_old_status = {}, defaultdict(list)
        for order, changes in moves:
            cls.check_transition(order.status, new)
            rows[order.pk] = {"updated_at": now, **changes, "status": new}
            by_old_status[order.status].append(order.pk)
        still_there = reduce(or_, (Q(pk__in=pks, status=old) for old, pks in by_old_status.items()))
        values = _values_by_pk(rows)
        updated = cls.objects.filter(still_there).transition(values.pop("status"), **values)
        if updated != len(moves):
            held = ", ".join(f"{order.out_trade_no} (was {order.status})" for order, _ in moves)
            raise IllegalTransition(
                f"order {held} changed concurrently ({updated} of {len(moves)} moved)"
            )
        for order, _ in moves:
            for field, value in rows[order.pk].items():
                setattr(order, field, value)


def _values_by_pk(rows: dict[int, dict]) -> dict:
    """UPDATE values for ``{pk: {field: value}}``: a constant where every row sets the same
    value, else ``CASE pk WHEN .. THEN .. ELSE field END`` (:class:`_ByPk`), a row that does not
    set the field keeping its own."""
    values = {}
    for name in {name for changes in rows.values() for name in changes}:
        setting = {pk: changes[name] for pk, changes in rows.items() if name in changes}
        first = next(iter(setting.values()))
        if len(setting) == len(rows) and all(value == first for value in setting.values()):
            values[name] = first
        else:
            values[name] = _ByPk(Order._meta.get_field(name), setting)
    return values


class _ByPk(Expression):
    """``CASE <pk> WHEN <pk1> THEN <v1> ... ELSE <column> END``, compiled straight to SQL.

    The same statement as ``Case(*[When(pk=.., then=Value(..)) ...], default=F(..))``, without
    an expression tree per row: Django resolves and copies every ``When``, ``Q`` and ``Value`` of
    that tree, which for a batch of confirms cost the orders worker more than the UPDATE itself.
    Values are prepared by the field, as ``update()`` prepares a constant."""

    def __init__(self, field, by_pk: dict):
        super().__init__(output_field=field)
        self.target, self.by_pk = field, by_pk

    def resolve_expression(self, *args, **kwargs):
        return self

    def as_sql(self, compiler, connection):
        pk, column = (
            compiler.quote_name_unless_alias(f.column) for f in (Order._meta.pk, self.target)
        )
        params = []
        for key, value in self.by_pk.items():
            params += [key, self.target.get_db_prep_save(value, connection)]
        return (
            f"CASE {pk} {' '.join(['WHEN %s THEN %s'] * len(self.by_pk))} ELSE {column} END",
            params,
        )


class PaymentRecord(models.Model):
    """Every bank payment the orders service has seen, once per bank trade number.

    APPLIED: it completed its order. FLAGGED: it could not (unknown order, amount or currency
    mismatch, order closed or already paid by another payment) and waits for a human in admin:
    money arrived that no order accounts for, so it is never dropped and never auto-completed.
    """

    class Outcome(models.TextChoices):
        APPLIED = "APPLIED"
        FLAGGED = "FLAGGED"

    bank_trade_no = models.CharField(max_length=64, unique=True)
    out_trade_no = models.CharField(max_length=64, db_index=True)
    order_id = models.BigIntegerField(null=True, blank=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    paid_at = models.DateTimeField()
    source = models.CharField(
        max_length=16, help_text="notify: the bank told us; poll: we asked the bank"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=255, blank=True, default="")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["outcome", "reviewed_at"], name="payment_record_review")]

    def __str__(self) -> str:
        return f"{self.bank_trade_no} {self.outcome}"


class Refund(models.Model):
    """Money of a paid order given back to its payer, in part or in full (``orders.refunds``).

    PENDING while it runs (a balance payment's refund only inside its TCC; a bank payment's
    until the bank answers), then SUCCEEDED or FAILED (``failure_reason`` says why). The
    merchant's ``merchant_refund_no`` is its idempotency key; ``refund_no`` is the platform's.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"

    TRANSITIONS = {
        Status.PENDING: {Status.SUCCEEDED, Status.FAILED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
    }

    class Kind(models.TextChoices):
        ORDER = "order", "order (the merchant refunds its paid order)"
        DUPLICATE = (
            "duplicate",
            "duplicate (a flagged bank payment no order took, back to the payer)",
        )

    refund_no = models.CharField(
        max_length=32, unique=True, help_text="the platform's refund number (also at the bank)"
    )
    merchant_id = models.BigIntegerField()
    merchant_refund_no = models.CharField(max_length=64)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    out_trade_no = models.CharField(max_length=32, db_index=True)
    amount = models.BigIntegerField(help_text="minor units")
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=255, blank=True, default="")
    method = models.CharField(
        max_length=8,
        choices=PayMethod.choices,
        help_text="how the order was paid: where the money goes back",
    )
    points = models.BigIntegerField(
        default=0, help_text="payer points this refund reverses (see docs/refunds.md)"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=255, blank=True, default="")
    tcc_xid = models.CharField(
        max_length=64, blank=True, default="", help_text="the TCC transaction that holds the money"
    )
    requested_by = models.CharField(
        max_length=150, default="merchant", help_text="merchant (API), or admin:<user>"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.ORDER)
    bank_refund_no = models.CharField(max_length=64, blank=True, default="")
    # a bank refund: when to ask the bank's refund query next while no notify has come (null: stop)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_count = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = StatusQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant_id", "merchant_refund_no"],
                name="refund_unique_merchant_refund_no",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gte=1), name="refund_amount_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_poll_at"], name="refund_status_poll"),
            models.Index(fields=["merchant_id", "-id"], name="refund_merchant_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.refund_no} {self.status}"
