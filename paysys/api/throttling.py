from django.conf import settings
from rest_framework.throttling import BaseThrottle

from paysys.api import ratelimit


class ApiKeyRateThrottle(BaseThrottle):
    """Requests per merchant API key, at the merchant's own ``api_rate_limit`` or else
    ``settings.API_RATE_LIMIT`` (read per request), counted atomically by ``paysys.api.ratelimit``
    (DRF's SimpleRateThrottle reads its history, changes it and writes it back: parallel requests
    of one key all passed). Refused: DRF's 429 with ``Retry-After`` (whole seconds, at least 1),
    shaped by the API's exception handler."""

    refusal = (
        "too many requests for this API key: retry after Retry-After seconds"  # the schema's 429
    )

    def allow_request(self, request, view):
        self.wait_seconds = ratelimit.retry_after(
            f"api_key:{self.ident(request)}", self.rate_for(request)
        )
        return self.wait_seconds is None

    @staticmethod
    def rate_for(request) -> str:
        """The merchant's own limit when it has one (Merchant.api_rate_limit), else API_RATE_LIMIT."""
        return getattr(request.user, "api_rate_limit", "") or settings.API_RATE_LIMIT

    def wait(self):
        return self.wait_seconds

    def ident(self, request) -> str:
        merchant = getattr(request, "user", None)
        if merchant is None or not getattr(merchant, "pk", None):
            return f"anon:{self.get_ident(request) or 'unknown'}"
        return merchant.api_key_prefix
