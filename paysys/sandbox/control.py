"""The one gate of the simulators' control endpoints (set-up, misbehaviour switches, what was
received, releasing held notifies): each needs ``Authorization: Bearer <SANDBOX_TOKEN>``, the
sandbox's own token. The simulated parties' own endpoints (pay page, notify receivers) are not
controls: paysys reaches them as it would a real bank or merchant."""

from __future__ import annotations

import hmac
from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from paysys.api.exceptions import ApiError, error_body


class SandboxTokenMissing(ApiError):
    status_code = 401
    code = "sandbox_token_required"


def require_sandbox_token(request) -> None:
    """Paying a pay link is open to its holder; steering the simulators is not."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.SANDBOX_TOKEN.encode()
    ):
        raise SandboxTokenMissing(
            "this sandbox control needs 'Authorization: Bearer <SANDBOX_TOKEN>'"
        )


def sandbox_control(view):
    """Mark ``view`` as a control endpoint: token required, a program's JSON call (no CSRF)."""

    @wraps(view)
    def control(request, *args, **kwargs):
        try:
            require_sandbox_token(request)
        except SandboxTokenMissing as exc:
            return JsonResponse(error_body(exc.code, exc.message), status=exc.status_code)
        return view(request, *args, **kwargs)

    control.sandbox_control = True  # tests check every control carries it
    return csrf_exempt(control)
