"""The merchant simulator over HTTP.

Receivers (what paysys POSTs notifications to, like a merchant's server):
  ``POST /sandbox/merchant/<merchant_id>/notify``  verified with that merchant's secret
  ``POST /sandbox/merchant/notify``                the demo merchants' shared receiver: the
                                                   merchant is the one whose secret verifies it
Controls (tests and the demo; behind :func:`paysys.sandbox.control.sandbox_control`):
  ``POST /sandbox/merchant/<merchant_id>``          set up ({"webhook_secret"}) or change behaviour
                                                   ({"fail_next", "fail_status", "retry_after",
                                                   "hang_seconds", "delay_ms", "gone"})
  ``GET  /sandbox/merchant/<merchant_id>``          its state
  ``GET  /sandbox/merchant/<merchant_id>/received`` what reached it, newest first (``?limit=``)
"""

from __future__ import annotations

import json
import time

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from paysys.api.exceptions import error_body, status_for
from paysys.core.errors import DomainError, InvalidInput
from paysys.sandbox.control import sandbox_control
from paysys.sandbox.merchant import services


def _error(exc: DomainError) -> JsonResponse:
    return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=status_for(exc))


@csrf_exempt
@require_POST
def merchant_notify(request, merchant_id: int | None = None):
    reply = services.notification_receive(
        merchant_id=merchant_id, path=request.path, headers=dict(request.headers), body=request.body
    )
    if reply.wait:
        time.sleep(reply.wait)
    return JsonResponse(reply.body, status=reply.status, headers=reply.headers)


@sandbox_control
@require_http_methods(["GET", "POST"])
def merchant_endpoint(request, merchant_id: int):
    try:
        if request.method == "POST":
            try:
                data = json.loads(request.body or b"{}")
            except (UnicodeDecodeError, ValueError):
                raise InvalidInput("the body is not JSON", code="malformed") from None
            endpoint = services.endpoint_configure(merchant_id=merchant_id, data=data)
        else:
            endpoint = services.endpoint_get(merchant_id=merchant_id)
    except DomainError as exc:
        return _error(exc)
    return JsonResponse(services.endpoint_document(endpoint))


@sandbox_control
@require_GET
def merchant_received(request, merchant_id: int):
    try:
        limit = int(request.GET.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        return _error(InvalidInput("limit: an integer from 1 to 1000", fields={"limit": "1-1000"}))
    try:
        deliveries = services.deliveries_list(merchant_id=merchant_id, limit=limit)
    except DomainError as exc:
        return _error(exc)
    return JsonResponse({"results": [services.delivery_document(d) for d in deliveries]})
