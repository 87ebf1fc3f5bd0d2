"""One shape for every API error: ``{"error": {"code", "message", "fields"?}}``.

Services raise domain errors (``paysys.core.errors``) or Django's ValidationError; this handler
is the one place that maps them to HTTP. :class:`ApiError` is for the HTTP layer's own
complaints (a malformed body, a bad signature header).
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from paysys.core import errors

logger = logging.getLogger(__name__)


class ApiError(errors.DomainError):
    status_code = status.HTTP_400_BAD_REQUEST


# domain error -> HTTP status; the most specific class wins (ApiError carries its own)
DOMAIN_STATUS = {
    errors.InvalidInput: status.HTTP_400_BAD_REQUEST,
    errors.NotFound: status.HTTP_404_NOT_FOUND,
    errors.Conflict: status.HTTP_409_CONFLICT,
    errors.Forbidden: status.HTTP_403_FORBIDDEN,
    errors.InsufficientFunds: status.HTTP_402_PAYMENT_REQUIRED,
    errors.LimitReached: status.HTTP_429_TOO_MANY_REQUESTS,
    errors.Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


# every 503 says when to come back (a Retry-After the schema promises on every operation)
RETRY_AFTER_UNAVAILABLE = "5"


def status_of(error: type[Exception]) -> int:
    """The status this handler answers for an exception class: the OpenAPI schema documents each
    operation's errors through it (paysys.api.schema.error_responses), so the two cannot drift."""
    if issubclass(error, (ApiError, exceptions.APIException)):
        return error.status_code
    for cls in error.__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return status.HTTP_400_BAD_REQUEST


def status_for(exc: errors.DomainError) -> int:
    return status_of(type(exc))


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    error = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _flatten(detail) -> dict:
    """DRF's nested error detail -> {field: "message; message"}."""
    if isinstance(detail, dict):
        out = {}
        for key, value in detail.items():
            if isinstance(value, dict):
                for sub, msg in _flatten(value).items():
                    out[f"{key}.{sub}"] = msg
            elif isinstance(value, list):
                out[key] = "; ".join(
                    str(v) if not isinstance(v, dict) else str(_flatten(v)) for v in value
                )
            else:
                out[key] = str(value)
        return out
    if isinstance(detail, list):
        return {"non_field_errors": "; ".join(str(v) for v in detail)}
    return {"non_field_errors": str(detail)}


def exception_handler(exc, context):
    if isinstance(exc, errors.DomainError):
        response = Response(error_body(exc.code, exc.message, exc.fields), status=status_for(exc))
        if isinstance(exc, errors.Unavailable):
            response["Retry-After"] = RETRY_AFTER_UNAVAILABLE
        return response
    if isinstance(exc, DjangoValidationError):
        fields = (
            {k: "; ".join(v) for k, v in exc.message_dict.items()}
            if hasattr(exc, "error_dict")
            else None
        )
        return Response(error_body("invalid", "; ".join(exc.messages), fields), status=400)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("too_large", "request body too large"), status=413)
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", "bad request"), status=400)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=404)
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.exception("database unavailable")
        response = Response(
            error_body("service_unavailable", "a database is unavailable, retry later"), status=503
        )
        response["Retry-After"] = RETRY_AFTER_UNAVAILABLE
        return response
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(
            "invalid", "the request has invalid fields", _flatten(exc.detail)
        )
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = error_body(code if isinstance(code, str) else "error", str(detail))
    return response


def json_error_view(status_code: int, code: str, message: str):
    def view(request, exception=None):
        return JsonResponse(error_body(code, message), status=status_code)

    return view
