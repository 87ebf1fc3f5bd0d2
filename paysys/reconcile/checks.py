"""The cross-service invariants (docs/architecture.md, "Reconciliation"), read-only.

Every SUCCESS order has exactly one voucher (booking the order's amount), one merchant credit
(POSTED, for the voucher's merchant payable), one points award (when it earns points), one
wallet debit (a balance payment) and one notification; no credit or voucher exists for an order
that is not paid; every account's columns equal the sum of its entries; every voucher balances.
What waits for a human is listed as stuck.

What a paid order lacks is *in flight*, not inconsistent, while it is on its way: the order
became SUCCESS less than ``grace`` seconds ago, its TCC's phase two is unfinished (a credit or
award not yet posted: a participant down), or its ``order.paid`` is still in the outbox (a
voucher or notification not yet made: a consumer down). Orders are read in chunks of
``CHUNK``, with one query per service per chunk.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from accounting.models import AccountCode, Voucher
from accounts.models import Direction, EntryKind, FundEntry, PointsEntry
from accounts.selectors import fund_account_mismatches, points_account_mismatches
from notifications.models import Notification
from orders.models import Order, PayMethod, PaymentRecord
from paysys.contracts import OrderPaid
from paysys.core.money import points_for
from paysys.messaging.metrics import outbox_stats_by_alias
from paysys.reconcile.refunds import check_refunds
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
        orders = list(Order.objects.filter(status__in=Order.PAID_STATUSES, pk__gt=last).order_by("pk")[:CHUNK])
        if not orders:
            break
        last = orders[-1].pk
        paid.update(o.out_trade_no for o in orders)
        _check_paid_orders(report, orders, recent)
    _check_nothing_moved_unpaid(report, paid)
    check_refunds(report, recent)
    _check_ledgers(report)
    _count_in_flight_and_stuck(report)
    return report


def _check_paid_orders(report: Report, orders: list[Order], recent) -> None:
    outs = [o.out_trade_no for o in orders]
    posted = FundEntry.objects.filter(kind=EntryKind.POSTED, out_trade_no__in=outs, xid__isnull=False)
    credits = _by_order(posted.filter(direction=Direction.CREDIT, account__owner_type="merchant"), "amount")
    debits = _by_order(posted.filter(direction=Direction.DEBIT, account__owner_type="payer"), "amount")
    awards = _by_order(PointsEntry.objects.filter(kind=EntryKind.POSTED, direction=Direction.CREDIT, out_trade_no__in=outs), "points")
    vouchers = {  # source -> (Σ debit, the merchant payable credited)
        source: (debit, payable or 0)
        for source, debit, payable in Voucher.objects.filter(source__in=[f"{OrderPaid.TOPIC}:{o}" for o in outs])
        .annotate(debit=Sum("lines__debit"),
                  payable=Sum("lines__credit", filter=Q(lines__account__code=AccountCode.MERCHANT_PAYABLE)))
        .values_list("source", "debit", "payable")
    }
    notified = Counter(Notification.objects.filter(order_id__in=[o.pk for o in orders], event_type=OrderPaid.TOPIC)
                       .values_list("order_id", flat=True))
    lacking = []
    for order in orders:
        report.checked["paid orders"] += 1
        voucher = vouchers.get(f"{OrderPaid.TOPIC}:{order.out_trade_no}")
        if voucher and voucher[0] != order.amount:
            report.problem("voucher", f"order {order.out_trade_no}: the voucher books {voucher[0]}, the order is {order.amount}")
        points = points_for(order.amount, order.currency)
        expected = {  # how many of each, and what amount where it is known
            "merchant credit": [] if voucher and voucher[1] == 0 else [voucher[1] if voucher else None],
            "points award": [points] if points else [],
            "wallet debit": [order.amount] if order.pay_method == PayMethod.BALANCE else [],
        }
        found = {"merchant credit": credits.get(order.out_trade_no, []), "points award": awards.get(order.out_trade_no, []),
                 "wallet debit": debits.get(order.out_trade_no, [])}
        missing = []
        for check, want in expected.items():
            got = found[check]
            if len(got) < len(want):
                missing.append(check)
            elif len(got) > len(want):
                report.problem(check, f"order {order.out_trade_no}: {len(got)} posted ({got}), expected {len(want)}")
            elif check == "merchant credit" and got and want[0] is not None and got[0] != want[0]:
                report.problem("merchant credit vs voucher",
                               f"order {order.out_trade_no}: the voucher owes the merchant {want[0]}, the posted credit is {got[0]}")
            elif got and want[0] is not None and got != want:
                report.problem(check, f"order {order.out_trade_no}: posted {got[0]}, expected {want[0]}")
        if voucher is None:
            missing.append("voucher")
        if notified[order.pk] == 0:
            missing.append("notification")
        elif notified[order.pk] > 1:
            report.problem("notification", f"order {order.out_trade_no}: {notified[order.pk]} notifications")
        if missing:
            lacking.append((order, missing))
    _missing_is_in_flight_or_wrong(report, lacking, recent)


BOOKED_FROM_MESSAGE = {"voucher", "notification"}  # made by the consumers of order.paid
POSTED_IN_PHASE_TWO = {"merchant credit", "points award", "wallet debit"}  # confirms of the order's TCC


def _missing_is_in_flight_or_wrong(report: Report, lacking: list[tuple[Order, list[str]]], recent) -> None:
    """What a paid order lacks is on its way while the order became SUCCESS moments ago, while its
    TCC's phase two is unfinished (a participant down), or while its ``order.paid`` is still in
    the outbox (a consumer down; DEAD: it waits for a human). Otherwise it is missing."""
    old = [(order, missing) for order, missing in lacking if order.updated_at <= recent]
    phase_two = set(GlobalTransaction.objects.filter(
        xid__in=[o.tcc_xid for o, missing in old if POSTED_IN_PHASE_TWO & set(missing)],
        status=GlobalTransaction.Status.CONFIRMING).values_list("xid", flat=True))
    outbox = _order_paid_not_consumed([o.out_trade_no for o, missing in old if BOOKED_FROM_MESSAGE & set(missing)])
    for order, missing in lacking:
        for check in missing:
            if order.updated_at > recent:
                report.in_flight[f"paid orders awaiting their {check}"] += 1
            elif check in POSTED_IN_PHASE_TWO and order.tcc_xid in phase_two:
                report.in_flight[f"paid orders awaiting their {check} (phase two unfinished)"] += 1
            elif check in BOOKED_FROM_MESSAGE and order.out_trade_no in outbox:
                status = outbox[order.out_trade_no]
                bucket = report.stuck if status == Message.Status.DEAD else report.in_flight
                bucket[f"paid orders awaiting their {check} (order.paid {status})"] += 1
            else:
                report.problem(check, f"order {order.out_trade_no} (paid {order.paid_at:%Y-%m-%d %H:%M:%S %Z}): no {check}")


def _order_paid_not_consumed(outs: list[str]) -> dict[str, str]:
    """Of these orders, those whose ``order.paid`` is still in the orders outbox, not consumed:
    out_trade_no -> its status (SENDING, PREPARED or DEAD; DEAD first, as it waits for a human)."""
    if not outs:
        return {}
    rows = Message.objects.using("orders").filter(
        topic=OrderPaid.TOPIC, status__in=[Message.Status.SENDING, Message.Status.PREPARED, Message.Status.DEAD],
        payload__out_trade_no__in=outs,
    ).order_by("status")  # "DEAD" sorts before "PREPARED" and "SENDING"
    found: dict[str, str] = {}
    for out_trade_no, status in rows.values_list("payload__out_trade_no", "status"):
        found.setdefault(out_trade_no, status)
    return found


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
    for (name, status), n in tcc_stats()["counts"].items():  # open ones only
        report.in_flight[f"TCC {name} {status}"] += n
    report.stuck["TCC transactions needing a human"] = GlobalTransaction.objects.filter(needs_human=True).count()
    for alias, stats in outbox_stats_by_alias(consumed=False).items():
        if stats is None:
            raise DatabaseError(f"the {alias} database did not answer")
        for (_, status), n in stats.counts.items():
            bucket = report.stuck if status == "DEAD" else report.in_flight
            bucket[f"messages {status} in {alias}"] += n
    report.stuck["bank payments FLAGGED, not yet reviewed"] = PaymentRecord.objects.filter(
        outcome=PaymentRecord.Outcome.FLAGGED, reviewed_at__isnull=True).count()
    notifications = dict(Notification.objects.exclude(status=Notification.Status.SUCCEEDED)
                         .order_by().values_list("status").annotate(n=Count("id")))
    report.in_flight["notifications PENDING"] = notifications.get(Notification.Status.PENDING, 0)
    report.stuck["notifications FAILED"] = notifications.get(Notification.Status.FAILED, 0)
