"""The OpenAPI schema is valid and the API honours it: schemathesis finds no 500 and no violation."""

import pytest
import schemathesis
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from paysys.wsgi import application

SERVICE_TOKEN = "schemathesis-service-token-0123456789abcdef"

# the message API is in the schema only while it is on (a token is set)
with override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def test_schema_is_valid_openapi():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


@pytest.fixture
def auth_headers(merchant_and_key, payer, settings):
    """Merchant API key for the orders API, the service token for the message API."""
    settings.API_RATE_LIMIT = "100000/min"
    settings.MESSAGING_SERVICE_TOKEN = SERVICE_TOKEN
    settings.MESSAGING_HTTP_TOPICS = ["messaging.bench"]
    return {
        "merchant": {"Authorization": f"Bearer {merchant_and_key[1]}"},
        "service": {"Authorization": f"Bearer {SERVICE_TOKEN}"},
    }


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_schema(case, auth_headers):
    # Every check runs except "schema-valid data must be accepted": the schema cannot say that
    # payer_id must name an existing payer, or which long hostnames a URL validator refuses.
    headers = auth_headers["service" if case.operation.path.startswith("/api/v1/messages") else "merchant"]
    # Say what is really sent, so schemathesis re-validates the case: a query parameter whose value
    # is an empty list or None is not sent at all; else `{"limit": 1, "<unknown>": []}` counts as
    # invalid data that the API "accepted".
    sent_query = {k: v for k, v in (case.query or {}).items() if v is not None and v != []}
    if sent_query != (case.query or {}):
        case.query = sent_query
    excluded = [positive_data_acceptance]
    if _headers_are_negative(case):
        # the valid credentials passed here replace the mutated Authorization header, so a 2xx is
        # right, not "invalid data accepted" (missing and bad keys are tested in tests/orders)
        excluded.append(negative_data_rejection)
    case.call_and_validate(headers=headers, excluded_checks=excluded)


def _headers_are_negative(case) -> bool:
    info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return info is not None and info.mode == GenerationMode.NEGATIVE
