"""Rows put straight into a status, as a test's "given" (a lost acknowledgement, a paid order, a
transaction stuck in phase two). Code changes a status only through ``transition``
(``paysys.core.statuses``), which refuses a plain ``update(status=...)``; a test arranging its
starting state goes around it on purpose, here."""

from django.db.models import QuerySet


def force_status(rows, status: str, **changes) -> int:
    """Set ``status`` on ``rows`` past the model's TRANSITIONS. Services never do this."""
    return QuerySet.update(rows.all(), status=status, **changes)
