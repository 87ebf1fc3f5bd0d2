"""OpenAPI pieces shared by every API: the one error shape (see paysys.api.exceptions)."""

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ERROR = inline_serializer(
    "Error",
    fields={
        "error": inline_serializer(
            "ErrorBody",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(child=serializers.CharField(), required=False),
            },
        )
    },
)


def error_responses(descriptions: dict[int, str], *codes: int) -> dict:
    """``{status: OpenApiResponse(ERROR)}`` for ``codes``, described from ``descriptions``."""
    return {code: OpenApiResponse(ERROR, description=descriptions[code]) for code in codes}
