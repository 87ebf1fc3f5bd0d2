"""Running reconcile in a test, and planting defects the way a bug would make them: an account's
columns moved together with the entries that explain them, in the service's own database."""

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Direction, EntryKind, FundAccount, FundEntry, PointsAccount, PointsEntry
from orders.models import Order
from paysys.tcc.models import GlobalTransaction


def reconcile(*args) -> tuple[int, dict]:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", "--json", *args, stdout=out)
    return exit_.value.code, json.loads(out.getvalue())


def reconcile_text(*args) -> tuple[int, str]:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", *args, stdout=out)
    return exit_.value.code, out.getvalue()


def age(orders, seconds=3600):
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


def transaction_row(status: str, business_key: str, attempt: int = 1) -> str:
    """A TCC transaction in ``status`` (the coordinator's table, ``default``); returns its xid."""
    xid = uuid.uuid4().hex
    GlobalTransaction.objects.create(
        xid=xid,
        name="pay_order_balance",
        business_key=business_key,
        attempt=attempt,
        status=status,
        deadline=timezone.now(),
    )
    return xid


# how each kind of entry moves the columns (accounts/models.py)
FUND_MOVES = {
    (EntryKind.HOLD, Direction.DEBIT): {"frozen": 1},
    (EntryKind.POSTED, Direction.DEBIT): {"frozen": -1, "balance": -1},
    (EntryKind.RELEASED, Direction.DEBIT): {"frozen": -1},
    (EntryKind.HOLD, Direction.CREDIT): {"pending_in": 1},
    (EntryKind.POSTED, Direction.CREDIT): {"pending_in": -1, "balance": 1},
    (EntryKind.RELEASED, Direction.CREDIT): {"pending_in": -1},
}
POINTS_MOVES = {
    EntryKind.HOLD: {"pending": 1},
    EntryKind.POSTED: {"pending": -1, "balance": 1},
    EntryKind.RELEASED: {"pending": -1},
}


def plant_fund_entries(
    *,
    owner_type: str,
    owner_id: int,
    direction: str,
    kinds: list[str],
    amount: int,
    xid: str,
    out_trade_no: str,
    currency: str = "CNY",
) -> None:
    with transaction.atomic(using="funds"):
        account, _ = FundAccount.objects.get_or_create(
            owner_type=owner_type, owner_id=owner_id, currency=currency
        )
        for kind in kinds:
            FundAccount.objects.filter(pk=account.pk).update(
                **{
                    column: F(column) + sign * amount
                    for column, sign in FUND_MOVES[kind, direction].items()
                }
            )
            account.refresh_from_db()
            FundEntry.objects.create(
                account=account,
                kind=kind,
                direction=direction,
                amount=amount,
                balance_after=account.balance,
                xid=xid,
                out_trade_no=out_trade_no,
            )


def plant_points_entries(
    *, payer_id: int, kinds: list[str], points: int, xid: str, out_trade_no: str
) -> None:
    with transaction.atomic(using="points"):
        account, _ = PointsAccount.objects.get_or_create(payer_id=payer_id)
        for kind in kinds:
            PointsAccount.objects.filter(pk=account.pk).update(
                **{column: F(column) + sign * points for column, sign in POINTS_MOVES[kind].items()}
            )
            account.refresh_from_db()
            PointsEntry.objects.create(
                account=account,
                kind=kind,
                points=points,
                balance_after=account.balance,
                xid=xid,
                out_trade_no=out_trade_no,
            )
