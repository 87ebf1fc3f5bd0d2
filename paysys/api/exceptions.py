"""One shape for every API error: ``{"error": {"code", "message", "fields"?}}``.

Domain errors raise :class:`ApiError` subclasses (or Django's ValidationError) from services;
this handler is the one place that maps them to HTTP.
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

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields
        if code:
            self.code = code


class Conflict(ApiError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class NotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class ServiceUnavailable(ApiError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"


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
                out[key] = "; ".join(str(v) if not isinstance(v, dict) else str(_flatten(v)) for v in value)
            else:
                out[key] = str(value)
        return out
    if isinstance(detail, list):
        return {"non_field_errors": "; ".join(str(v) for v in detail)}
    return {"non_field_errors": str(detail)}


def exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        fields = {k: "; ".join(v) for k, v in exc.message_dict.items()} if hasattr(exc, "error_dict") else None
        return Response(error_body("invalid", "; ".join(exc.messages), fields), status=400)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("too_large", "request body too large"), status=413)
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", "bad request"), status=400)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=404)
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.exception("database unavailable")
        return Response(error_body("service_unavailable", "a database is unavailable, retry later"), status=503)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "the request has invalid fields", _flatten(exc.detail))
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = error_body(code if isinstance(code, str) else "error", str(detail))
    return response


def json_error_view(status_code: int, code: str, message: str):
    def view(request, exception=None):
        return JsonResponse(error_body(code, message), status=status_code)

    return view
