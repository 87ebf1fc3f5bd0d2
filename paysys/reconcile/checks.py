"""The cross-service invariants (DESIGN.md, "Reconciliation"), read-only.

Every SUCCESS order has exactly one merchant credit (POSTED, for the voucher's merchant payable),
one points award (when it earns points), one wallet debit (a balance payment), one voucher and
one notification; no credit or voucher exists for an order that is not paid; every account's
columns equal the sum of its entries; every voucher balances. Stuck and dead items are listed.

What a payment still completing lacks (its orders confirm landed, the funds confirm, the voucher
or the notification not yet) is *in flight*, not inconsistent, while the order became SUCCESS
less than ``grace`` seconds ago, and a missing voucher or notification also while its
``order.paid`` message is still in the outbox (not consumed). Orders are read in chunks of ``CHUNK``, with one query per service
per chunk.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from accounting.models import AccountCode, Voucher, VoucherLine
from accounts.models import Direction, EntryKind, FundEntry, PointsEntry
from accounts.selectors import fund_account_mismatches, points_account_mismatches
from notifications.models import Notification
from orders.models import Order, PayMethod, PaymentRecord
from paysys.contracts import OrderPaid
from paysys.core.money import points_for
from paysys.messaging.metrics import outbox_stats_by_alias
from paysys.messaging.models import Message
from paysys.tcc.metrics import tcc_stats
from paysys.tcc.models import GlobalTransaction

CHUNK = 2000
EXAMPLES = 20  # problems listed per check; all are counted


@dataclass
class Report:
    checked: Counter = field(default_factory=Counter)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    in_flight: Counter = field(default_factory=Counter)
    stuck: Counter = field(default_factory=Counter)

    @property
    def consistent(self) -> bool:
        return not self.problems

    @property
    def settled(self) -> bool:
        """Consistent, and nothing in flight or stuck (``--strict``)."""
        return self.consistent and not +self.in_flight and not +self.stuck

    def problem(self, check: str, detail: str) -> None:
        self.problems[check].append(detail)

    def as_dict(self) -> dict:
        return {
            "consistent": self.consistent, "settled": self.settled, "checked": dict(self.checked),
            "problems": {check: {"count": len(found), "examples": found[:EXAMPLES]} for check, found in self.problems.items()},
            "in_flight": dict(+self.in_flight), "stuck": dict(+self.stuck),
        }


def reconcile(*, grace: float = 60.0) -> Report:
    report = Report()
    recent = timezone.now() - timedelta(seconds=grace)
    paid: set[str] = set()
    last = 0
    while True:
        orders = list(Order.objects.filter(status=Order.Status.SUCCESS, pk__gt=last).order_by("pk")[:CHUNK])
        if not orders:
            break
        last = orders[-1].pk
        paid.update(o.out_trade_no for o in orders)
        _check_paid_orders(report, orders, recent)
    _check_nothing_moved_unpaid(report, paid)
    _check_ledgers(report)
    _count_in_flight_and_stuck(report)
    return report


def _check_paid_orders(report: Report, orders: list[Order], recent) -> None:
    outs = [o.out_trade_no for o in orders]
    posted = FundEntry.objects.filter(kind=EntryKind.POSTED, out_trade_no__in=outs, xid__isnull=False)
    credits = _by_order(posted.filter(direction=Direction.CREDIT, account__owner_type="merchant"), "amount")
    debits = _by_order(posted.filter(direction=Direction.DEBIT, account__owner_type="payer"), "amount")
    awards = _by_order(PointsEntry.objects.filter(kind=EntryKind.POSTED, out_trade_no__in=outs), "points")
    payable = dict(
        VoucherLine.objects.filter(voucher__source__in=[f"{OrderPaid.TOPIC}:{o}" for o in outs],
                                   account__code=AccountCode.MERCHANT_PAYABLE)
        .values_list("voucher__source").annotate(credit=Sum("credit"))
    )
    vouchers = set(Voucher.objects.filter(source__in=[f"{OrderPaid.TOPIC}:{o}" for o in outs]).values_list("source", flat=True))
    notified = Counter(Notification.objects.filter(order_id__in=[o.pk for o in orders], event_type=OrderPaid.TOPIC)
                       .values_list("order_id", flat=True))
    lacking = []
    for order in orders:
        report.checked["paid orders"] += 1
        source = f"{OrderPaid.TOPIC}:{order.out_trade_no}"
        owed = payable.get(source)
        expected = {
            "merchant credit": [owed] if owed != 0 else [],  # None: no voucher yet to say how much
            "points award": [points_for(order.amount, order.currency)] if points_for(order.amount, order.currency) else [],
            "wallet debit": [order.amount] if order.pay_method == PayMethod.BALANCE else [],
        }
        found = {"merchant credit": credits.get(order.out_trade_no, []), "points award": awards.get(order.out_trade_no, []),
                 "wallet debit": debits.get(order.out_trade_no, [])}
        missing = []
        for check, want in expected.items():
            got = found[check]
            if len(got) < len(want):
                missing.append(check)
            elif len(got) > len(want) or any(w is not None and w != g for w, g in zip(want, got)):
                report.problem(check, f"order {order.out_trade_no}: expected {want}, found {got}")
        if source not in vouchers:
            missing.append("voucher")
        if notified[order.pk] == 0:
            missing.append("notification")
        elif notified[order.pk] > 1:
            report.problem("notification", f"order {order.out_trade_no}: {notified[order.pk]} notifications")
        if missing:
            lacking.append((order, missing))
    undelivered = _undelivered_order_paid([o.out_trade_no for o, missing in lacking if BOOKED_FROM_MESSAGE & set(missing)])
    for order, missing in lacking:
        for check in missing:
            if order.updated_at > recent:  # became SUCCESS moments ago: the rest is on its way
                report.in_flight[f"paid orders awaiting their {check}"] += 1
            elif check in BOOKED_FROM_MESSAGE and order.out_trade_no in undelivered:
                report.in_flight[f"paid orders awaiting their {check} (order.paid not yet consumed)"] += 1
            else:
                report.problem(check, f"order {order.out_trade_no} (paid {order.paid_at:%Y-%m-%d %H:%M:%S}): no {check}")


BOOKED_FROM_MESSAGE = {"voucher", "notification"}  # made by consumers of order.paid


def _undelivered_order_paid(outs: list[str]) -> set[str]:
    """Of these orders, those whose ``order.paid`` is still in the orders outbox, not consumed
    (its voucher and notification are on their way; a DEAD one is listed as stuck)."""
    if not outs:
        return set()
    pending = Message.objects.using("orders").filter(
        topic=OrderPaid.TOPIC, status__in=[Message.Status.SENDING, Message.Status.PREPARED, Message.Status.DEAD],
        payload__out_trade_no__in=outs,
    )
    return set(pending.values_list("payload__out_trade_no", flat=True))


def _by_order(entries, column: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for out_trade_no, value in entries.order_by("pk").values_list("out_trade_no", column):
        found[out_trade_no].append(value)
    return found


def _check_nothing_moved_unpaid(report: Report, paid: set[str]) -> None:
    """Money moved (a merchant credit posted by a TCC, a voucher booked) for an order not paid."""
    credited = FundEntry.objects.filter(kind=EntryKind.POSTED, direction=Direction.CREDIT, xid__isnull=False,
                                        account__owner_type="merchant").values_list("out_trade_no", flat=True).distinct()
    for out_trade_no in credited.iterator():
        if out_trade_no not in paid:
            report.problem("merchant credit", f"order {out_trade_no}: credited, but the order is not paid")
    prefix = f"{OrderPaid.TOPIC}:"
    for source in Voucher.objects.filter(source__startswith=prefix).values_list("source", flat=True).iterator():
        if source[len(prefix):] not in paid:
            report.problem("voucher", f"{source}: booked, but the order is not paid")


def _check_ledgers(report: Report) -> None:
    for mismatch in fund_account_mismatches():
        report.problem("fund account vs entries", f"{mismatch['owner']}: {mismatch['actual']} but entries say {mismatch['from_entries']}")
    for mismatch in points_account_mismatches():
        report.problem("points account vs entries", f"{mismatch['owner']}: {mismatch['actual']} but entries say {mismatch['from_entries']}")
    unbalanced = (Voucher.objects.annotate(debit=Sum("lines__debit"), credit=Sum("lines__credit"))
                  .filter(~Q(debit=F("credit"))).values_list("source", "debit", "credit"))
    for source, debit, credit in unbalanced:
        report.problem("unbalanced voucher", f"{source}: debits {debit}, credits {credit}")
    report.checked["vouchers"] = Voucher.objects.count()


def _count_in_flight_and_stuck(report: Report) -> None:
    report.in_flight["orders PAYING"] = Order.objects.filter(status=Order.Status.PAYING).count()
    for (name, status), n in tcc_stats()["counts"].items():
        if status not in (GlobalTransaction.Status.CONFIRMED, GlobalTransaction.Status.CANCELLED):
            report.in_flight[f"TCC {name} {status}"] += n
    report.stuck["TCC transactions needing a human"] = GlobalTransaction.objects.filter(needs_human=True).count()
    for alias, stats in outbox_stats_by_alias(consumed=False).items():
        for (_, status), n in (stats.counts.items() if stats else ()):
            bucket = report.stuck if status == "DEAD" else report.in_flight
            bucket[f"messages {status} in {alias}"] += n
    report.stuck["bank payments FLAGGED for review"] = PaymentRecord.objects.filter(outcome=PaymentRecord.Outcome.FLAGGED).count()
    notifications = dict(Notification.objects.exclude(status=Notification.Status.SUCCEEDED)
                         .order_by().values_list("status").annotate(n=Count("id")))
    report.in_flight["notifications PENDING"] = notifications.get(Notification.Status.PENDING, 0)
    report.stuck["notifications FAILED"] = notifications.get(Notification.Status.FAILED, 0)
