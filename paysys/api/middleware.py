from django.conf import settings
from django.http import JsonResponse

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
