"""Reads of the accounting service: the trial balance and the checks reconciliation needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import F, Q, QuerySet, Sum

from accounting.models import Account, AccountCode, Voucher, VoucherLine

ALIAS = "accounting"


@dataclass(frozen=True)
class TrialBalanceRow:
    account: Account
    debit: int
    credit: int

    @property
    def balance(self) -> int:
        """Signed on the account's normal side: positive is the usual state of the account."""
        if self.account.normal_side == Account.Side.DEBIT:
            return self.debit - self.credit
        return self.credit - self.debit


@dataclass(frozen=True)
class TrialBalance:
    currency: str | None  # None: every currency summed together (only the equality is meaningful)
    rows: list[TrialBalanceRow] = field(default_factory=list)

    @property
    def total_debit(self) -> int:
        return sum(row.debit for row in self.rows)

    @property
    def total_credit(self) -> int:
        return sum(row.credit for row in self.rows)

    @property
    def difference(self) -> int:
        return self.total_debit - self.total_credit

    @property
    def balanced(self) -> bool:
        return self.difference == 0


def trial_balance(*, currency: str | None = None) -> TrialBalance:
    """Σ debit, Σ credit and balance of every account (those never booked to show zeros).

    Pass ``currency`` for a meaningful per-currency ledger; without it the totals of all
    currencies are added, which still answers "do debits equal credits".
    """
    lines = VoucherLine.objects.using(ALIAS)
    if currency is not None:
        lines = lines.filter(voucher__currency=currency)
    sums = {
        row["account_id"]: row
        for row in lines.values("account_id")
        .annotate(debit=Sum("debit"), credit=Sum("credit"))
        .order_by()
    }
    rows = [
        TrialBalanceRow(
            account=account,
            debit=sums.get(account.pk, {}).get("debit") or 0,
            credit=sums.get(account.pk, {}).get("credit") or 0,
        )
        for account in Account.objects.using(ALIAS).order_by("code")
    ]
    return TrialBalance(currency=currency, rows=rows)


def voucher_currencies() -> list[str]:
    return list(
        Voucher.objects.using(ALIAS)
        .order_by("currency")
        .values_list("currency", flat=True)
        .distinct()
    )


def trial_balances() -> list[TrialBalance]:
    """One trial balance per currency booked (none booked yet: one empty, currency-less)."""
    return [trial_balance(currency=c) for c in voucher_currencies()] or [trial_balance()]


def voucher_get(*, source: str) -> Voucher | None:
    return Voucher.objects.using(ALIAS).filter(source=source).first()


def unbalanced_vouchers() -> list[tuple[Voucher, int, int]]:
    """Vouchers whose lines do not balance (or have no lines): ``(voucher, Σ debit, Σ credit)``.

    The booking service never writes one; reconciliation asks anyway, because rows can be
    changed outside it.
    """
    suspects = (
        Voucher.objects.using(ALIAS)
        .annotate(debit=Sum("lines__debit"), credit=Sum("lines__credit"))
        .filter(Q(debit__isnull=True) | ~Q(debit=F("credit")))
        .order_by("id")
    )
    return [(v, v.debit or 0, v.credit or 0) for v in suspects]


def vouchers() -> QuerySet[Voucher]:
    """Every voucher's source (for ``paysys.core.sql.pk_batches``)."""
    return Voucher.objects.using(ALIAS).order_by("pk").values_list("source", flat=True)


def voucher_sums(sources) -> dict[str, tuple[int, int]]:
    """source -> (Σ debit, Σ credit to the merchant payable) of these vouchers (unique source)."""
    rows = (
        Voucher.objects.using(ALIAS)
        .filter(source__in=list(sources))
        .annotate(
            debit=Sum("lines__debit"),
            payable=Sum(
                "lines__credit", filter=Q(lines__account__code=AccountCode.MERCHANT_PAYABLE)
            ),
        )
        .order_by()
        .values_list("source", "debit", "payable")
    )
    return {source: (debit or 0, payable or 0) for source, debit, payable in rows}
