from django.conf import settings
from django.http import JsonResponse
from django.urls import Resolver404, resolve
from rest_framework.settings import api_settings

from paysys.api import ratelimit
from paysys.api.exceptions import error_body
from paysys.core.netguard import client_network


class BodySizeLimitMiddleware:
    """Refuse oversized request bodies before any view or parser reads them.

    Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE only when ``request.body`` is read; DRF's parsers
    read the stream directly, so the limit is applied here, to every path, on the declared length.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body("bad_request", "invalid Content-Length"), status=400)
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return JsonResponse(
                error_body(
                    "too_large", f"request body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
                ),
                status=413,
            )
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """Send ``settings.CONTENT_SECURITY_POLICY`` with every response that has none of its own.

    The admin and the API docs are the platform's only HTML; everything they load (Swagger UI
    included, from drf-spectacular-sidecar) comes from this origin, so ``'self'`` is the policy.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class PrivateAnswersMiddleware:
    """An answer to a request that carries credentials (a merchant's orders, balance, refunds,
    notifications) is never kept by a browser or a shared cache: ``Cache-Control: no-store``,
    unless the view said otherwise."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Authorization" in request.headers:
            response.headers.setdefault("Cache-Control", "no-store")
        return response


# public endpoints (no API key) -> scope in settings.PUBLIC_RATE_LIMITS; methods None = all
PUBLIC_SCOPES = [
    ("/gateway/", None, "gateway"),
    ("/sandbox/", None, "sandbox"),
    ("/admin/login/", {"POST"}, "admin_login"),
]


def client_address(request) -> str:
    """REMOTE_ADDR, or the address NUM_PROXIES trusted proxies put in X-Forwarded-For (a client
    can write anything there: without proxies it is never read); an IPv6 client as its /64."""
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        return client_network(hops[-min(proxies, len(hops))])
    return client_network(request.META.get("REMOTE_ADDR", "") or "unknown")


class PublicRateLimitMiddleware:
    """Requests per client address on the endpoints anyone may call without an API key: the bank
    gateway, the sandbox, admin log-in attempts, counted per (scope, address) by
    ``paysys.api.ratelimit``. Beyond the limit: 429 JSON with ``Retry-After``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        for prefix, methods, scope in PUBLIC_SCOPES:
            if request.path.startswith(prefix) and (methods is None or request.method in methods):
                refused = self.refused(request, scope)
                if refused is not None:
                    return refused
                break
        return self.get_response(request)

    @staticmethod
    def refused(request, scope: str):
        wait = ratelimit.retry_after(
            f"{scope}:{client_address(request)}", settings.PUBLIC_RATE_LIMITS[scope]
        )
        if wait is None:
            return None
        response = JsonResponse(
            error_body("throttled", f"too many requests from this address ({scope})"), status=429
        )
        response["Retry-After"] = str(wait)
        return response


API_PREFIX = "/api/"
# what a non-JSON error under /api/ becomes (Django's own 404/405/500 pages, HTML with DEBUG on)
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    500: "server_error",
}


class ApiJsonErrorsMiddleware:
    """Every error under ``/api/`` is JSON ``{"error": ...}``, whatever DEBUG is.

    API views answer JSON themselves; this covers what never reaches one: a path that matches no
    URL (with DEBUG on Django would list every URL of the site in an HTML page), a method a plain
    Django view refuses, an error page. The docs and schema pages are not errors and pass as they are.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith(API_PREFIX) or response.status_code < 400:
            return response
        no_view = response.status_code == 404 and getattr(request, "resolver_match", None) is None
        if no_view or not response.get("Content-Type", "").startswith("application/json"):
            return JsonResponse(
                self.body(request, response.status_code), status=response.status_code
            )
        return response

    @staticmethod
    def body(request, status_code: int) -> dict:
        code = STATUS_CODES.get(status_code, "error")
        if status_code != 404:
            return error_body(code, code.replace("_", " "))
        message = f"no API endpoint at {request.path}"
        if request.path.endswith("/") and _resolves(request.path.rstrip("/")):
            message += f"; did you mean {request.path.rstrip('/')} (without the trailing slash)?"
        return error_body(code, message)


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True
