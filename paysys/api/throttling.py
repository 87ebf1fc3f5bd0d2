import math

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per merchant API key, at ``settings.API_RATE_LIMIT`` (read per request)."""

    scope = "api_key"
    refusal = "too many requests for this API key: retry after Retry-After seconds"  # the schema's 429

    def get_rate(self):
        return settings.API_RATE_LIMIT

    def allow_request(self, request, view):
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def wait(self):
        """Whole seconds, at least 1 (the Retry-After header; DRF's own can say 0)."""
        seconds = super().wait()
        return None if seconds is None else max(1, math.ceil(seconds))

    def get_cache_key(self, request, view):
        merchant = getattr(request, "user", None)
        if merchant is None or not getattr(merchant, "pk", None):
            return self.cache_format % {"scope": self.scope, "ident": f"anon:{self.get_ident(request) or 'unknown'}"}
        return self.cache_format % {"scope": self.scope, "ident": merchant.api_key_prefix}
