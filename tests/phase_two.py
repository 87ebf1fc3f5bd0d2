"""TCC phase two run here and now, in the test's process, as the participants' workers run it."""

from __future__ import annotations

from collections.abc import Iterable

from paysys.tcc import phase_two
from paysys.tcc.models import GlobalTransaction


def run_phase_two(xids: Iterable[str] | None = None) -> int:
    """Run the unfinished phase two of these transactions (default: every one deciding) here and
    now, and make final the transactions whose branches are all done (also those whose last
    report was lost). Returns branch ops run."""
    transactions = GlobalTransaction.objects.filter(status__in=GlobalTransaction.PHASE_TWO)
    if xids is not None:
        transactions = transactions.filter(xid__in=list(xids))
    transactions = list(transactions)
    items = [entry for gtx in transactions for entry in phase_two.pending_items(gtx)]
    if items:
        phase_two.apply_and_report(items)
    phase_two.mark_final(gtx.pk for gtx in transactions)
    return len(items)
