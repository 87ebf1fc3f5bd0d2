"""Paid orders as a completed payment leaves them, generated in bulk for the benchmarks.

``bench_reconcile`` times reconcile over them in databases of its own; ``bench_history`` stores
them in a benchmark stack's databases, so ``bench_payments`` can be run with history. Every row
reconcile reads: the order, its CONFIRMED TCC transaction, the merchant's credit hold and post,
the payer's points hold and post, the voucher and its three lines, the notification; account
columns equal to their entries (continued from the accounts' balances when they exist).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.db import connections, router, transaction
from django.utils import timezone

from paysys.core.sql import insert_rows

BATCH = 10_000  # orders generated per round (one multi-row insert per table)

Progress = Callable[[int, int], None]  # (done, total)


def load_rows(model, columns: list[str], values: list[tuple], *, using: str | None = None) -> None:
    """Plain tuples into ``model``'s table in one transaction of its database (model instances
    cost more than the database here)."""
    alias = using or router.db_for_write(model)
    with transaction.atomic(using=alias):
        insert_rows(alias, model, columns, values)


def paid_orders_generate(
    ids: range, *, merchants: range, payers: range, progress: Progress | None = None
) -> None:
    """Insert one bank-paid order per id in ``ids`` (the order, TCC transaction and voucher ids),
    of ``merchants`` and ``payers`` in turn. The ids must be free in those three tables."""
    from accounting.models import Account, AccountCode
    from accounts.models import FundAccount, PointsAccount
    from notifications.models import Endpoint

    FundAccount.objects.bulk_create(
        [FundAccount(owner_type="merchant", owner_id=m, currency="CNY") for m in merchants],
        batch_size=BATCH,
        ignore_conflicts=True,
    )
    PointsAccount.objects.bulk_create(
        [PointsAccount(payer_id=p) for p in payers], batch_size=BATCH, ignore_conflicts=True
    )
    Endpoint.objects.bulk_create(
        [Endpoint(merchant_id=m, url=f"http://127.0.0.1:9/m{m}") for m in merchants],
        ignore_conflicts=True,
    )
    # MariaDB returns no ids from a bulk insert, and some accounts may have been there: read them back
    funds = {
        a.owner_id: a
        for a in FundAccount.objects.filter(
            owner_type="merchant", currency="CNY", owner_id__in=merchants
        )
    }
    points = {a.payer_id: a for a in PointsAccount.objects.filter(payer_id__in=payers)}
    endpoints = {
        e.merchant_id: e
        for e in Endpoint.objects.filter(
            merchant_id__in=merchants, url__startswith="http://127.0.0.1:9/m"
        )
    }
    accounts = {a.code: a for a in Account.objects.all()}
    codes = (
        accounts[AccountCode.BANK_CLEARING],
        accounts[AccountCode.MERCHANT_PAYABLE],
        accounts[AccountCode.FEE_INCOME],
    )
    balances = {
        "funds": {m: a.balance for m, a in funds.items()},
        "points": {p: a.balance for p, a in points.items()},
    }
    for first in range(ids.start, ids.stop, BATCH):
        _round(
            range(first, min(first + BATCH, ids.stop)),
            merchants,
            payers,
            funds,
            points,
            endpoints,
            codes,
            balances,
        )
        if progress:
            progress(min(first + BATCH, ids.stop) - ids.start, len(ids))
    for m, balance in balances["funds"].items():
        FundAccount.objects.filter(pk=funds[m].pk).update(balance=balance)
    for p, balance in balances["points"].items():
        PointsAccount.objects.filter(pk=points[p].pk).update(balance=balance)


def _round(ids, merchants, payers, funds, points, endpoints, codes, balances) -> None:
    from accounting.models import Voucher, VoucherLine
    from accounts.models import FundEntry, PointsEntry
    from notifications.models import Notification
    from orders.models import Order
    from paysys.contracts import OrderPaid
    from paysys.core.money import points_for
    from paysys.tcc.models import GlobalTransaction

    now = timezone.now()
    rows = {
        model: []
        for model in (
            Order,
            GlobalTransaction,
            FundEntry,
            PointsEntry,
            Voucher,
            VoucherLine,
            Notification,
        )
    }
    at = {alias: connections[alias].ops.adapt_datetimefield_value for alias in connections}
    paid_at, created = (
        {a: at[a](now - timedelta(hours=2)) for a in at},
        {a: at[a](now - timedelta(hours=1)) for a in at},
    )
    for i in ids:
        merchant, payer = merchants[i % len(merchants)], payers[i % len(payers)]
        amount = 100 + (i * 7919) % 99_900
        fee = (amount * 60 + 5000) // 10_000  # 0.6 %
        award = points_for(amount, "CNY")
        out, xid, key = f"BR{i:020d}", f"{i:032x}", f"bank:BT{i}"
        rows[Order].append(
            (
                i,
                out,
                merchant,
                f"M{i}",
                amount,
                "CNY",
                "bench",
                payer,
                "",
                "SUCCESS",
                f"BT{i}",
                xid,
                "bank",
                created["orders"],
                paid_at["orders"],
                0,
                created["orders"],
                created["orders"],
            )
        )
        rows[GlobalTransaction].append(
            (
                i,
                xid,
                "complete_order",
                key,
                1,
                key,
                "CONFIRMED",
                paid_at["default"],
                0,
                False,
                "",
                paid_at["default"],
                paid_at["default"],
                paid_at["default"],
            )
        )
        credit = amount - fee
        balances["funds"][merchant] += credit
        for kind, after in (
            ("hold", balances["funds"][merchant] - credit),
            ("posted", balances["funds"][merchant]),
        ):
            rows[FundEntry].append(
                (
                    funds[merchant].pk,
                    kind,
                    "credit",
                    credit,
                    after,
                    xid,
                    out,
                    "",
                    "",
                    created["funds"],
                )
            )
        if award:
            balances["points"][payer] += award
            for kind, after in (
                ("hold", balances["points"][payer] - award),
                ("posted", balances["points"][payer]),
            ):
                rows[PointsEntry].append(
                    (points[payer].pk, kind, award, after, xid, out, "", created["points"])
                )
        rows[Voucher].append((i, f"{OrderPaid.TOPIC}:{out}", "CNY", "", created["accounting"]))
        rows[VoucherLine] += [(i, codes[0].pk, amount, 0), (i, codes[1].pk, 0, credit)] + (
            [(i, codes[2].pk, 0, fee)] if fee else []
        )
        rows[Notification].append(
            (
                f"msg_bench{i}",
                merchant,
                i,
                out,
                f"M{i}",
                OrderPaid.TOPIC,
                endpoints[merchant].pk,
                endpoints[merchant].url,
                "{}",
                "SUCCEEDED",
                1,
                0,
                "",
                created["notifications"],
                created["notifications"],
                created["notifications"],
            )
        )
    for model, values in rows.items():
        load_rows(model, COLUMNS[model.__name__], values)


COLUMNS = {
    "Order": [
        "id",
        "out_trade_no",
        "merchant_id",
        "merchant_order_no",
        "amount",
        "currency",
        "subject",
        "payer_id",
        "notify_url",
        "status",
        "bank_trade_no",
        "tcc_xid",
        "pay_method",
        "expires_at",
        "paid_at",
        "poll_count",
        "created_at",
        "updated_at",
    ],
    "GlobalTransaction": [
        "id",
        "xid",
        "name",
        "business_key",
        "attempt",
        "confirmed_key",
        "status",
        "deadline",
        "attempts",
        "needs_human",
        "last_error",
        "created_at",
        "decided_at",
        "finished_at",
    ],
    "FundEntry": [
        "account_id",
        "kind",
        "direction",
        "amount",
        "balance_after",
        "xid",
        "out_trade_no",
        "reason",
        "created_by",
        "created_at",
    ],
    "PointsEntry": [
        "account_id",
        "kind",
        "points",
        "balance_after",
        "xid",
        "out_trade_no",
        "reason",
        "created_at",
    ],
    "Voucher": ["id", "source", "currency", "description", "created_at"],
    "VoucherLine": ["voucher_id", "account_id", "debit", "credit"],
    "Notification": [
        "webhook_id",
        "merchant_id",
        "order_id",
        "out_trade_no",
        "merchant_order_no",
        "event_type",
        "endpoint_id",
        "url",
        "body",
        "status",
        "attempt_count",
        "step",
        "last_error",
        "created_at",
        "updated_at",
        "succeeded_at",
    ],
}
