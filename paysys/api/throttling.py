from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per merchant API key, at ``settings.API_RATE_LIMIT`` (read per request)."""

    scope = "api_key"

    def get_rate(self):
        return settings.API_RATE_LIMIT

    def allow_request(self, request, view):
        self.rate = getattr(request.user, "api_rate_limit", "") or self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        merchant = getattr(request, "user", None)
        if merchant is None or not getattr(merchant, "pk", None):
            return self.cache_format % {"scope": self.scope, "ident": f"anon:{self.get_ident(request) or 'unknown'}"}
        return self.cache_format % {"scope": self.scope, "ident": merchant.api_key_prefix}
