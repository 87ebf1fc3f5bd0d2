"""What the bank may ask the platform about an order (``paysys.bank``'s order-status protocol).

A plain view, not part of the merchant API (no API key: the bank signs its question with the
shared secret, and the answer is signed the same way). Mounted at ``/gateway/bank/orders/<no>``
next to the bank's notify intake, so it shares the gateway's per-address rate limit.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from orders.selectors import order_status_for_bank
from paysys import bank
from paysys.api.exceptions import error_body


@require_safe
@never_cache
def bank_order_status(request, out_trade_no: str):
    """``GET /gateway/bank/orders/<out_trade_no>``: ``{"out_trade_no", "status", "payable"}``."""
    if not bank.signature_valid(out_trade_no.encode(), request.headers.get(bank.SIGNATURE_HEADER)):
        return JsonResponse(
            error_body("invalid_signature", "sign the out_trade_no with the bank's secret"),
            status=401,
        )
    try:
        status, payable = order_status_for_bank(out_trade_no=out_trade_no)
    except DatabaseError:  # the orders database is down: no verdict (the bank takes the payment)
        return JsonResponse(error_body("unavailable", "the order cannot be read now"), status=503)
    body, signature = bank.order_status_document(
        out_trade_no=out_trade_no, status=status, payable=payable
    )
    return HttpResponse(
        body, content_type="application/json", headers={bank.SIGNATURE_HEADER: signature}
    )
