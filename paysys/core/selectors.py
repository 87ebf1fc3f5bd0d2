"""Reads of core identity that more than one caller needs."""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from paysys.core.models import PayerAgreement, PayerAgreementDay


def agreement_in_force(*, payer_id: int, merchant_id: int) -> PayerAgreement | None:
    """The payer's agreement in force with the merchant (at most one), or None."""
    return PayerAgreement.objects.filter(
        payer_id=payer_id, merchant_id=merchant_id, in_force=True
    ).first()


def agreement_list(
    *, payer_id: int | None = None, merchant_id: int | None = None
) -> QuerySet[PayerAgreement]:
    """Agreements, newest first, each with ``used_today``: what its payments of today add up to."""
    today = PayerAgreementDay.objects.filter(
        agreement=OuterRef("pk"), day=PayerAgreementDay.today()
    ).values("amount")
    agreements = PayerAgreement.objects.annotate(
        used_today=Coalesce(Subquery(today[:1]), Value(0))
    ).order_by("-pk")
    if payer_id is not None:
        agreements = agreements.filter(payer_id=payer_id)
    if merchant_id is not None:
        agreements = agreements.filter(merchant_id=merchant_id)
    return agreements
