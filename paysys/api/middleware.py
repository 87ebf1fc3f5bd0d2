from django.conf import settings
from django.http import JsonResponse
from django.urls import Resolver404, resolve

from paysys.api.exceptions import error_body


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
                error_body("too_large", f"request body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"), status=413
            )
        return self.get_response(request)


API_PREFIX = "/api/"
# what a non-JSON error under /api/ becomes (Django's own 404/405/500 pages, HTML with DEBUG on)
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 500: "server_error"}


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
            return JsonResponse(self.body(request, response.status_code), status=response.status_code)
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
