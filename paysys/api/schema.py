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


def strict_request_bodies(result, generator, request, public):
    """Postprocessing hook: request bodies (``...Request`` components, COMPONENT_SPLIT_REQUEST)
    take no property they do not list, as StrictInputSerializer enforces."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
