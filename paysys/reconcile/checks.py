"""The cross-service invariants (docs/architecture.md, "Reconciliation"), read-only, through each
service's selectors.

Every SUCCESS order has exactly one voucher (booking the order's amount), one merchant credit
(POSTED, for the voucher's merchant payable), one points award (when it earns points), one
wallet debit (a balance payment) and one notification. Every posted entry belongs to its order's
confirmed TCC transaction (the order's ``tcc_xid``): nothing is posted, in any account, for an
order that is not paid, nor under another transaction (a cancelled one, say). Every hold
(``frozen``, ``pending_in``, points ``pending``) belongs to an open transaction. Every
account's columns equal the sum of its entries; every voucher has lines, and they balance; no
voucher books an order that is not paid. What waits for a human is listed as stuck.

*In flight* is not inconsistent: a paid order lacks something while it became SUCCESS less
than ``grace`` seconds ago, while its TCC's phase two is unfinished (a credit or award not yet
posted: a participant down), or while its ``order.paid`` is still in the outbox (a voucher or
notification not yet made: a consumer down). Postings of a transaction deciding to confirm
(CONFIRMING) whose order it holds (PAYING) are in flight too: the orders confirm has not
landed yet (the orders worker down), however long that takes.

Every table is read in primary-key ranges of ``CHUNK`` ids (``paysys.core.sql.pk_batches``),
with one query per service per range: memory holds one range, whatever the tables' size.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone

from accounting import selectors as accounting
from accounts import selectors as accounts
from notifications import selectors as notifications
from orders import selectors as orders
from orders.models import Order, PayMethod
from paysys.contracts import OrderPaid
from paysys.core.money import points_for
from paysys.core.sql import pk_batches
from paysys.messaging import selectors as messaging
from paysys.messaging.metrics import outbox_stats_by_alias
from paysys.reconcile.refunds import check_refunds, refund_holds_awaiting_bank
from paysys.tcc import selectors as tcc
from paysys.tcc.metrics import tcc_stats

# ids per range, and so values per IN list of a range's lookups: under MariaDB's
# in_predicate_conversion_threshold (1000), past which an IN list becomes a join of a derived
# table and the planner may walk every entry of an account instead of the out_trade_no index
CHUNK = 900
EXAMPLES = 20  # problems listed per check; all are counted
PAID = (
    Order.PAID_STATUSES
)  # paid, then perhaps refunded in part or in full (paysys/reconcile/refunds.py)
CONFIRMING = "CONFIRMING"
OPEN = {"TRYING", "CONFIRMING", "CANCELLING"}
VOUCHER_PREFIX = f"{OrderPaid.TOPIC}:"

Progress = Callable[[str, int, int], None]  # (step, ranges done, ranges in all)


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

    @property
    def inconsistencies(self) -> int:
        return sum(len(found) for found in self.problems.values())

    def problem(self, check: str, detail: str) -> None:
        self.problems[check].append(detail)

    def as_dict(self) -> dict:
        return {
            "consistent": self.consistent,
            "settled": self.settled,
            "checked": dict(self.checked),
            "problems": {
                check: {"count": len(found), "examples": found[:EXAMPLES]}
                for check, found in self.problems.items()
            },
            "in_flight": dict(+self.in_flight),
            "stuck": dict(+self.stuck),
        }


def reconcile(*, grace: float = 60.0, progress: Progress | None = None) -> Report:
    report = Report()
    recent = timezone.now() - timedelta(seconds=grace)
    steps = (
        (
            "paid orders",
            orders.paid_orders(),
            lambda batch: _check_paid_orders(report, batch, recent),
        ),
        (
            "fund postings",
            accounts.fund_postings(),
            lambda batch: _check_postings(report, batch, _fund_what),
        ),
        (
            "points postings",
            accounts.points_postings(),
            lambda batch: _check_postings(report, batch, _points_what),
        ),
        (
            "fund holds",
            accounts.open_fund_holds(),
            lambda batch: _check_holds(report, batch, _fund_what, accounts.open_fund_holds),
        ),
        (
            "points holds",
            accounts.open_points_holds(),
            lambda batch: _check_holds(report, batch, _points_what, accounts.open_points_holds),
        ),
        ("vouchers", accounting.vouchers(), lambda batch: _check_vouchers(report, batch)),
    )
    for step, rows, check in steps:
        total, batches = pk_batches(rows, CHUNK)
        for done, batch in batches:
            check(batch)
            if progress:
                progress(step, done, total)
    check_refunds(report, recent)
    _check_ledgers(report)
    if progress:
        progress("ledgers", 1, 1)
    _count_in_flight_and_stuck(report)
    return report


# --- what a paid order must have ------------------------------------------------------------


def _check_paid_orders(report: Report, batch: list[Order], recent) -> None:
    outs = [o.out_trade_no for o in batch]
    credits, debits, awards = defaultdict(list), defaultdict(list), defaultdict(list)
    for entry in accounts.fund_postings(out_trade_nos=outs):
        found = {("merchant", "credit"): credits, ("payer", "debit"): debits}.get(
            (entry["account__owner_type"], entry["direction"])
        )
        if found is not None:
            found[entry["out_trade_no"]].append(entry)
    for entry in accounts.points_postings(out_trade_nos=outs):
        awards[entry["out_trade_no"]].append(entry)
    vouchers = accounting.voucher_sums(f"{VOUCHER_PREFIX}{o}" for o in outs)
    notified = notifications.notification_counts(
        order_ids=[o.pk for o in batch], event_type=OrderPaid.TOPIC
    )
    stray = []  # (order, what, entry) posted under another transaction than the one that paid the order
    lacking = []
    for order in batch:
        report.checked["paid orders"] += 1
        voucher = vouchers.get(f"{VOUCHER_PREFIX}{order.out_trade_no}")
        if voucher and voucher[0] != order.amount:
            report.problem(
                "voucher",
                f"order {order.out_trade_no}: the voucher books {voucher[0]}, the order is {order.amount}",
            )
        points = points_for(order.amount, order.currency)
        expected = {  # how many of each, and what amount where it is known
            "merchant credit": []
            if voucher and voucher[1] == 0
            else [voucher[1] if voucher else None],
            "points award": [points] if points else [],
            "wallet debit": [order.amount] if order.pay_method == PayMethod.BALANCE else [],
        }
        entries = {
            "merchant credit": credits[order.out_trade_no],
            "points award": awards[order.out_trade_no],
            "wallet debit": debits[order.out_trade_no],
        }
        missing = []
        for check, want in expected.items():
            stray += [(order, check, e) for e in entries[check] if e["xid"] != order.tcc_xid]
            got = [e["amount"] if "amount" in e else e["points"] for e in entries[check]]
            if len(got) < len(want):
                missing.append(check)
            elif len(got) > len(want):
                report.problem(
                    check,
                    f"order {order.out_trade_no}: {len(got)} posted ({got}), expected {len(want)}",
                )
            elif check == "merchant credit" and got and want[0] is not None and got[0] != want[0]:
                report.problem(
                    "merchant credit vs voucher",
                    f"order {order.out_trade_no}: the voucher owes the merchant {want[0]}, the posted credit is {got[0]}",
                )
            elif got and want[0] is not None and got != want:
                report.problem(
                    check, f"order {order.out_trade_no}: posted {got[0]}, expected {want[0]}"
                )
        if voucher is None:
            missing.append("voucher")
        if notified.get(order.pk, 0) == 0:
            missing.append("notification")
        elif notified[order.pk] > 1:
            report.problem(
                "notification", f"order {order.out_trade_no}: {notified[order.pk]} notifications"
            )
        if missing:
            lacking.append((order, missing))
    if stray:
        statuses = tcc.transaction_statuses(e["xid"] for _, _, e in stray)
        for order, what, e in stray:
            report.problem(
                "posted under another transaction",
                f"order {order.out_trade_no}: {what} of {e.get('amount', e.get('points'))} posted under xid {e['xid']} "
                f"({statuses.get(e['xid'], 'no such transaction')}), but the order was paid by xid {order.tcc_xid}",
            )
    _missing_is_in_flight_or_wrong(report, lacking, recent)


BOOKED_FROM_MESSAGE = {"voucher", "notification"}  # made by the consumers of order.paid
POSTED_IN_PHASE_TWO = {
    "merchant credit",
    "points award",
    "wallet debit",
}  # confirms of the order's TCC


def _missing_is_in_flight_or_wrong(
    report: Report, lacking: list[tuple[Order, list[str]]], recent
) -> None:
    """What a paid order lacks is on its way while the order became SUCCESS moments ago, while its
    TCC's phase two is unfinished (a participant down), or while its ``order.paid`` is still in
    the outbox (a consumer down; DEAD: it waits for a human). Otherwise it is missing."""
    old = [(order, set(missing)) for order, missing in lacking if order.updated_at <= recent]
    statuses = tcc.transaction_statuses(
        o.tcc_xid for o, missing in old if POSTED_IN_PHASE_TWO & missing
    )
    outbox = messaging.not_consumed(
        OrderPaid.TOPIC,
        [o.out_trade_no for o, missing in old if BOOKED_FROM_MESSAGE & missing],
        using="orders",
    )
    for order, missing in lacking:
        for check in missing:
            if order.updated_at > recent:
                report.in_flight[f"paid orders awaiting their {check}"] += 1
            elif check in POSTED_IN_PHASE_TWO and statuses.get(order.tcc_xid) == CONFIRMING:
                report.in_flight[f"paid orders awaiting their {check} (phase two unfinished)"] += 1
            elif check in BOOKED_FROM_MESSAGE and order.out_trade_no in outbox:
                status = outbox[order.out_trade_no]
                bucket = report.stuck if status == "DEAD" else report.in_flight
                bucket[f"paid orders awaiting their {check} (order.paid {status})"] += 1
            else:
                report.problem(
                    check,
                    f"order {order.out_trade_no} (paid {order.paid_at:%Y-%m-%d %H:%M:%S %Z}): no {check}",
                )


# --- what every entry and voucher must belong to ----------------------------------------------


def _fund_what(entry: dict) -> tuple[str, str, int]:
    """(what the entry is, its column while held, amount)."""
    owner, direction = entry["account__owner_type"], entry["direction"]
    what = {("merchant", "credit"): "merchant credit", ("payer", "debit"): "wallet debit"}.get(
        (owner, direction), f"{owner} {direction}"
    )
    held = "frozen" if direction == "debit" else "pending_in"
    return what, held, entry["amount"]


def _points_what(entry: dict) -> tuple[str, str, int]:
    return "points award", "points pending", entry["points"]


def _owner(entry: dict) -> str:
    if "account__payer_id" in entry:
        return f"payer #{entry['account__payer_id']} points"
    return (
        f"{entry['account__owner_type']} #{entry['account__owner_id']} {entry['account__currency']}"
    )


def _check_postings(report: Report, batch: list[dict], what_of) -> None:
    """Nothing is posted for an order that is not paid: a posting whose order is not SUCCESS is in
    flight only while its transaction is CONFIRMING and holds the order (PAYING under its xid);
    the orders confirm is then still on its way. (A paid order's postings are checked with it.)"""
    for e in batch:
        report.checked[what_of(e)[0] + " postings"] += 1
    unpaid = _unpaid(batch)
    if not unpaid:
        return
    # the transaction's status first, the order's after: a confirm landing between the two reads
    # then shows as a paid order, never as a confirmed transaction with its order still PAYING
    statuses = tcc.transaction_statuses(e["xid"] for e in unpaid)
    states = orders.order_states(e["out_trade_no"] for e in unpaid)
    for e in unpaid:
        what, _, amount = what_of(e)
        order_status, holder = states.get(e["out_trade_no"], ("unknown", ""))
        status = statuses.get(e["xid"], "no such transaction")
        if order_status in PAID:
            continue
        if status == CONFIRMING and order_status == Order.Status.PAYING and holder == e["xid"]:
            report.in_flight["postings of payments confirming (order not yet SUCCESS)"] += 1
            continue
        verb = {
            "merchant credit": "credited",
            "wallet debit": "debited",
            "points award": "awarded",
        }.get(what, what)
        report.problem(
            what,
            f"order {e['out_trade_no'] or '-'}: {verb}, but the order is not paid (it is {order_status}): "
            f"{amount} on {_owner(e)} posted under xid {e['xid']} ({status})",
        )


def _unpaid(batch: list[dict]) -> list[dict]:
    states = orders.order_states(e["out_trade_no"] for e in batch)
    return [e for e in batch if states.get(e["out_trade_no"], ("",))[0] not in PAID]


def _check_holds(report: Report, batch: list[dict], what_of, still_open) -> None:
    """Every hold still open belongs to an open transaction: one left by a CONFIRMED or CANCELLED
    transaction is money stuck for ever (neither posted nor released)."""
    report.checked["open holds"] += len(batch)
    statuses = tcc.transaction_statuses(e["xid"] for e in batch)
    suspects = [e for e in batch if statuses.get(e["xid"]) not in OPEN]
    suspects = refund_holds_awaiting_bank(
        report, suspects
    )  # a bank refund's holds wait for the bank's answer
    if not suspects:
        return
    # read again after the statuses: a transaction finishes only once its holds are posted or
    # released, so a hold closed between the two reads is not open any more
    open_now = set(still_open(pks=[e["pk"] for e in suspects]).values_list("pk", flat=True))
    for e in suspects:
        if e["pk"] not in open_now:
            continue
        what, held, amount = what_of(e)
        status = statuses.get(e["xid"], "no such transaction")
        report.problem(
            "hold of a finished transaction",
            f"order {e['out_trade_no'] or '-'}: {held} {amount} on {_owner(e)} held by xid {e['xid']} ({status}), "
            f"neither posted nor released",
        )


def _check_vouchers(report: Report, sources: list[str]) -> None:
    booked = [s[len(VOUCHER_PREFIX) :] for s in sources if s.startswith(VOUCHER_PREFIX)]
    states = orders.order_states(booked)
    report.checked["vouchers"] += len(sources)
    for out_trade_no in booked:
        status = states.get(out_trade_no, ("unknown",))[0]
        if status not in PAID:
            report.problem(
                "voucher",
                f"{VOUCHER_PREFIX}{out_trade_no}: booked, but the order is not paid (it is {status})",
            )


def _check_ledgers(report: Report) -> None:
    for mismatch in accounts.fund_account_mismatches():
        report.problem(
            "fund account vs entries",
            f"{mismatch['owner']}: {mismatch['actual']} but entries say {mismatch['from_entries']}",
        )
    for mismatch in accounts.points_account_mismatches():
        report.problem(
            "points account vs entries",
            f"{mismatch['owner']}: {mismatch['actual']} but entries say {mismatch['from_entries']}",
        )
    for voucher, debit, credit in accounting.unbalanced_vouchers():
        detail = "no lines" if not debit and not credit else f"debits {debit}, credits {credit}"
        report.problem("unbalanced voucher", f"{voucher.source}: {detail}")


def _count_in_flight_and_stuck(report: Report) -> None:
    report.in_flight["orders PAYING"] = orders.orders_paying_count()
    for (name, status), n in tcc_stats()["counts"].items():  # open ones only
        report.in_flight[f"TCC {name} {status}"] += n
    report.stuck["TCC transactions needing a human"] = tcc.needing_human_count()
    for alias, stats in outbox_stats_by_alias(consumed=False).items():
        if stats is None:
            raise DatabaseError(f"the {alias} database did not answer")
        for (_, status), n in stats.counts.items():
            bucket = report.stuck if status == "DEAD" else report.in_flight
            bucket[f"messages {status} in {alias}"] += n
    report.stuck["bank payments FLAGGED, not yet reviewed"] = (
        orders.flagged_payments_unreviewed_count()
    )
    unsettled = notifications.unsettled_counts()
    report.in_flight["notifications PENDING"] = unsettled.get("PENDING", 0)
    report.stuck["notifications FAILED"] = unsettled.get("FAILED", 0)
