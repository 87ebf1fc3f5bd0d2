"""Who may read the endpoints that show internals (``/metrics``, ``/healthz/detail``)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import JsonResponse

from paysys.api.exceptions import error_body


def metrics_token_refusal(request, *, realm: str = "metrics") -> JsonResponse | None:
    """None when the request carries ``Authorization: Bearer <METRICS_TOKEN>``; else the answer:
    404 while no token is set (the endpoint is off), 401 otherwise."""
    expected = settings.METRICS_TOKEN
    if not expected:
        return JsonResponse(error_body("not_found", "not found"), status=404)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        response = JsonResponse(
            error_body("not_authenticated", "use 'Authorization: Bearer <METRICS_TOKEN>'"),
            status=401,
        )
        response["WWW-Authenticate"] = f'Bearer realm="{realm}"'
        return response
    return None
