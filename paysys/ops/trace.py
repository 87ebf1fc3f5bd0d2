"""One payment's trace: from any of its ids, every step it took through the services, in time order.

``q`` may be an order's out_trade_no or merchant_order_no, a refund's refund_no or
merchant_refund_no, a bank_trade_no, a TCC xid or a notification's webhook-id. Each is resolved to the order(s) it names through the owning service's
selectors (each service in its own database), then every service is asked what it holds about
that out_trade_no. A service whose database does not answer is a step saying so, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from accounting.selectors import voucher_get
from notifications.selectors import notification_by_webhook_id, notifications_of_order
from orders.models import Order
from orders.selectors import (
    orders_find,
    payment_record_get,
    payment_records_of,
    refunds_find,
    refunds_of,
)
from paysys.contracts import OrderPaid
from paysys.gateway.selectors import bank_notifies_of, bank_notify_get
from paysys.messaging.registry import get_consumer
from paysys.messaging.selectors import inbox_entry_get, messages_about
from paysys.ops.health import Problem, Reader
from paysys.tcc.selectors import transaction_get, transactions_of

BANK_KEY, BALANCE_KEY = "bank:", "balance:"


@dataclass
class Step:
    at: datetime | None
    service: str
    what: str
    detail: str = ""
    url: str = ""
    state: str = ""  # "ok", "wait" or "bad": how the page colours it


@dataclass
class Trace:
    out_trade_no: str
    order: Order | None = None
    steps: list[Step] = field(default_factory=list)


def admin_url(name: str, pk, **query) -> str:
    url = reverse(f"admin:{name}_change", args=[pk])
    return f"{url}?{urlencode(query)}" if query else url


def resolve(q: str, read: Reader) -> list[str]:
    """The out_trade_nos ``q`` names, through each service's unique ids; a key with a kind
    (``bank:<bank_trade_no>``, ``order.paid:<out_trade_no>``) by the id after its colon."""
    found = _resolve(q, read)
    if (
        not found and ":" in q
    ):  # once: the id after the first colon (never a walk along many colons)
        return _resolve(q.split(":", 1)[1], read)
    return found


def _resolve(q: str, read: Reader) -> list[str]:
    found = read("orders", lambda: [order.out_trade_no for order in orders_find(q)], [])
    found = found or read("orders", lambda: [refund.out_trade_no for refund in refunds_find(q)], [])
    if found:
        return found
    notify = read("core", lambda: bank_notify_get(bank_trade_no=q))
    record = notify or read("orders", lambda: payment_record_get(bank_trade_no=q))
    if record is not None:
        return [record.out_trade_no]
    gtx = read("core", lambda: transaction_get(xid=q))
    if gtx is not None and gtx.business_key != q:
        return resolve(gtx.business_key, read)
    notification = read("notifications", lambda: notification_by_webhook_id(q))
    return [notification.out_trade_no] if notification is not None else []


def trace(q: str) -> tuple[list[Trace], list[Problem]]:
    """The traces of every order ``q`` names, and the databases that did not answer."""
    read = Reader()
    traces = [
        _trace_of(out_trade_no, read) for out_trade_no in dict.fromkeys(resolve(q.strip(), read))
    ]
    return traces, read.problems


def _trace_of(out_trade_no: str, read: Reader) -> Trace:
    orders = read("orders", lambda: orders_find(out_trade_no), [])
    result = Trace(out_trade_no, orders[0] if orders else None)
    steps = result.steps
    order = result.order
    if order is not None:
        steps.append(
            Step(
                order.created_at,
                "orders",
                "order created",
                f"{order.merchant_order_no} of merchant {order.merchant_id}: {order.amount} {order.currency}",
                admin_url("orders_order", order.pk),
            )
        )
        if order.paid_at:  # the bank's time of the payment (a balance payment: its confirm)
            steps.append(
                Step(
                    order.paid_at,
                    "orders",
                    f"payer paid ({order.pay_method}, paid_at)",
                    f"order {order.status}",
                    admin_url("orders_order", order.pk),
                    "ok" if order.status == Order.Status.SUCCESS else "wait",
                )
            )
    bank_trade_nos = {order.bank_trade_no} if order is not None and order.bank_trade_no else set()
    for notify, receipts in read("core", lambda: bank_notifies_of(out_trade_no=out_trade_no), []):
        bank_trade_nos.add(notify.bank_trade_no)
        for receipt in receipts:
            steps.append(
                Step(
                    receipt.received_at,
                    "gateway",
                    "bank notify received",
                    f"receipt {receipt.pk}: {receipt.state}",
                    admin_url("gateway_banknotifyreceipt", receipt.pk),
                    "bad" if receipt.error else "ok",
                )
            )
        steps.append(
            Step(
                notify.received_at,
                "gateway",
                "bank notify stored",
                f"{notify.bank_trade_no}, {notify.amount} {notify.currency}, {notify.duplicates} duplicate(s)"
                + (f", flagged: {notify.flag}" if notify.flag else ""),
                admin_url("gateway_banknotify", notify.pk),
                "bad" if notify.flag else "ok",
            )
        )
    for record in read("orders", lambda: payment_records_of(out_trade_no=out_trade_no), []):
        bank_trade_nos.add(record.bank_trade_no)
        steps.append(
            Step(
                record.created_at,
                "orders",
                f"bank payment {record.outcome}",
                f"{record.bank_trade_no} ({record.source}) {record.reason}".strip(),
                admin_url("orders_paymentrecord", record.pk),
                "ok" if record.outcome == "APPLIED" else "bad",
            )
        )
    refund_keys = []
    for refund in read("orders", lambda: refunds_of(out_trade_no=out_trade_no), []):
        refund_keys.append(f"refund:{refund.merchant_id}:{refund.merchant_refund_no}")
        steps.append(
            Step(
                refund.created_at,
                "orders",
                f"refund {refund.refund_no} {refund.status}",
                f"{refund.merchant_refund_no}: {refund.amount} {refund.currency} to the payer ({refund.method}) "
                f"{refund.failure_reason}".strip(),
                admin_url("orders_refund", refund.pk),
                {"SUCCEEDED": "ok", "FAILED": "bad"}.get(refund.status, "wait"),
            )
        )
    steps.extend(_message_steps(out_trade_no, read))
    keys = (
        [f"{BANK_KEY}{no}" for no in sorted(bank_trade_nos)]
        + [f"{BALANCE_KEY}{out_trade_no}"]
        + refund_keys
    )
    for gtx, branches in read("core", lambda: transactions_of(keys), []):
        url = admin_url("tcc_globaltransaction", gtx.pk)
        steps.append(
            Step(gtx.created_at, "tcc", f"TCC {gtx.name} attempt {gtx.attempt} begun", gtx.xid, url)
        )
        for branch in (
            branches
        ):  # shown with their transaction's start: tried then, phase two after the decision
            detail = branch.last_error[:200]
            if branch.attempts:
                detail = f"{branch.attempts} failed phase-two run(s): {detail}"
            steps.append(
                Step(
                    gtx.created_at,
                    "tcc",
                    f"branch {branch.action} {branch.status}",
                    detail,
                    url,
                    {"CONFIRMED": "ok", "CANCELLED": "wait"}.get(
                        branch.status, "bad" if branch.last_error else "wait"
                    ),
                )
            )
        if gtx.decided_at:
            steps.append(Step(gtx.decided_at, "tcc", f"TCC decided: {gtx.status}", gtx.xid, url))
        if gtx.finished_at:
            steps.append(
                Step(
                    gtx.finished_at,
                    "tcc",
                    f"TCC {gtx.status}",
                    gtx.xid,
                    url,
                    "ok" if gtx.status == "CONFIRMED" else "wait",
                )
            )
        elif gtx.needs_human:
            steps.append(
                Step(
                    gtx.next_retry_at, "tcc", "TCC needs a human", gtx.last_error[:200], url, "bad"
                )
            )
    voucher = read("accounting", lambda: voucher_get(source=f"{OrderPaid.TOPIC}:{out_trade_no}"))
    if voucher is not None:
        steps.append(
            Step(
                voucher.created_at,
                "accounting",
                "voucher booked",
                voucher.source,
                admin_url("accounting_voucher", voucher.pk),
                "ok",
            )
        )
    if order is not None:
        for notification, attempts in read(
            "notifications", lambda: notifications_of_order(order_id=order.pk), []
        ):
            url = admin_url("notifications_notification", notification.pk)
            steps.append(
                Step(
                    notification.created_at,
                    "notifications",
                    f"merchant notification {notification.event_type}",
                    f"{notification.webhook_id}: {notification.status}",
                    url,
                )
            )
            for attempt in attempts:
                steps.append(
                    Step(
                        attempt.started_at,
                        "notifications",
                        f"notify attempt {attempt.number}: {attempt.outcome}",
                        f"{attempt.status_code or ''} {attempt.error_class} {attempt.duration_ms} ms".strip(),
                        url,
                        "ok" if attempt.outcome == "succeeded" else "bad",
                    )
                )
    steps.sort(key=lambda step: (step.at is None, step.at or datetime.min))
    return result


def _message_steps(out_trade_no: str, read: Reader) -> list[Step]:
    steps = []
    for alias in settings.DATABASES:
        # read() calls each lambda at once, inside the loop's own iteration
        for row in read(alias, lambda: messages_about(out_trade_no, aliases=[alias]), []):  # noqa: B023
            url = admin_url(
                "messaging_message", row.pk, _changelist_filters=urlencode({"service": alias})
            )
            state = {"CONSUMED": "ok", "DEAD": "bad"}.get(row.status, "wait")
            steps.append(
                Step(
                    row.created_at,
                    settings.SERVICE_ALIASES.get(alias, alias),
                    f"message {row.topic} → {row.consumer} published",
                    f"{row.status}, sent {row.send_count}x"
                    + (f": {row.last_error[:200]}" if row.last_error else ""),
                    url,
                    state,
                )
            )
            try:
                consumer_alias = get_consumer(row.consumer).alias
            except KeyError:  # a consumer no longer registered: its inbox is not known
                continue
            entry = read(
                consumer_alias,
                lambda: inbox_entry_get(
                    consumer=row.consumer,  # noqa: B023 - called at once by read()
                    message_id=row.message_id,  # noqa: B023
                    using=consumer_alias,  # noqa: B023
                ),
            )
            if entry is not None:
                steps.append(
                    Step(
                        entry.received_at,
                        settings.SERVICE_ALIASES.get(consumer_alias, consumer_alias),
                        f"message {row.topic} consumed by {row.consumer} (inbox)",
                        str(row.message_id),
                        url,
                        "ok",
                    )
                )
    return steps
