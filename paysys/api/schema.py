"""The OpenAPI schema says what the code answers: every operation's statuses, from the code that
produces them.

* An operation's own errors are declared on its view as ``error_responses({exception class:
  when})``; each status is the one the exception handler answers for that class
  (``paysys.api.exceptions.status_of``).
* What the code around every view answers is added to every operation by :class:`ApiAutoSchema`,
  described once here: the middleware, DRF's dispatch, the view's authentication and throttle
  classes, the JSON parser, the handler's database-down 503.

Every response has the one error shape (``paysys.api.exceptions.error_body``), and every output
field is always present (read-only fields are ``required`` in the response components).
"""

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

from paysys.api.exceptions import status_of

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

# every 503 carries it (the concurrency limit: 1 s; a service or database down: 5 s); a 429 when
# the API key's request rate is the reason (not for a quota such as the open orders)
RETRY_AFTER = {
    "503": {"required": True, "description": "seconds to wait before trying again"},
    "429": {
        "required": False,
        "description": "seconds to wait before trying again (sent when the request rate is the reason)",
    },
}


# an operation with no query parameters refuses any (paysys.api.fields.reject_unknown_params)
NO_QUERY_PARAMETERS = "an unknown query parameter (this operation takes none)"


def error_responses(raises: dict[type[Exception], str]) -> dict:
    """``{status: OpenApiResponse(ERROR)}`` for the errors an operation's own code raises, given as
    ``{exception class: when}``; classes answered with one status share its response."""
    described: dict[int, list[str]] = {}
    for error, when in raises.items():
        described.setdefault(status_of(error), []).append(when)
    return {
        code: OpenApiResponse(ERROR, description="; ".join(whens))
        for code, whens in described.items()
    }


def ecma_pattern(validator: RegexValidator) -> str:
    """A RegexValidator's pattern as drf-spectacular writes it for a serializer field (``\\A``,
    ``\\Z`` -> ``^``, ``$``), for a parameter that takes what the field takes."""
    return validator.regex.pattern.replace(r"\A", "^").replace(r"\Z", "$")


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's operation, plus the answers that come from around its view.

    A status the view declares too keeps one response, its description joined with these."""

    def surrounding_errors(self) -> dict[int, str]:
        errors = {
            # paysys.api.middleware, on any path
            400: "a malformed request (a Content-Length header that is not a number)",
            413: f"a request body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes",
            503: "busy (more requests in progress than this web process takes; from any path), or a "
            "database did not answer: retry after Retry-After seconds",
            # DRF's dispatch and content negotiation
            405: "this path does not take the method: the Allow header lists those it does",
            406: "the Accept header does not admit application/json",
        }
        for authentication in self.view.authentication_classes:
            errors[401] = getattr(authentication, "refusal", "missing or invalid credentials")
        for throttle in self.view.throttle_classes:
            errors[429] = getattr(throttle, "refusal", "too many requests")
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors[400] = "the body is not valid JSON; " + errors[400]  # paysys.api.parsers
            errors[415] = "the body is not application/json"
        return errors

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in self.surrounding_errors().items():
            code = str(code)
            if code in responses:
                responses[code]["description"] = f"{responses[code]['description']}; {description}"
            else:
                response = OpenApiResponse(ERROR, description=description)
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return dict(sorted(responses.items()))

    def _get_response_headers_for_code(self, status_code, direction="response"):
        headers = super()._get_response_headers_for_code(status_code, direction)
        if str(status_code) in RETRY_AFTER:
            headers.setdefault(
                "Retry-After",
                {"schema": {"type": "integer", "minimum": 1}, **RETRY_AFTER[str(status_code)]},
            )
        return headers


def strict_request_bodies(result, generator, request, public):
    """Postprocessing hook: request bodies (``...Request`` components, COMPONENT_SPLIT_REQUEST)
    take no property they do not list, as StrictInputSerializer enforces."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
