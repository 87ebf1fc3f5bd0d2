"""The OpenAPI schema is valid and the API honours it: schemathesis finds no 500 and no violation."""

import pytest
import schemathesis
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from paysys.bench.contracts import BenchPing
from paysys.core.models import Merchant
from paysys.core.services import API_KEY_PREFIX, _hash_api_key
from paysys.wsgi import application

SERVICE_TOKEN = "schemathesis-service-token-0123456789abcdef"

# the message API is in the schema only while it is on (a token is set)
with override_settings(MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

# fixed, because schemathesis may set credentials on cases it makes while collecting the tests;
# the ``credentials`` fixture gives each test's merchant this key
MERCHANT_KEY_PREFIX = "5c4e3a000001"
MERCHANT_KEY = f"{API_KEY_PREFIX}{MERCHANT_KEY_PREFIX}_schemathesis-merchant-key"
TOKENS = {"merchant": MERCHANT_KEY, "service": SERVICE_TOKEN}


@schema.auth(refresh_interval=None)
class BearerTokens:
    """Credentials go through schemathesis' auth, so it leaves them out of the negative cases it
    makes about authentication: a request it sends without a token must be refused, and is."""

    def get(self, case, context):
        return TOKENS[
            "service" if context.operation.path.startswith("/api/v1/messages") else "merchant"
        ]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def test_schema_is_valid_openapi():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_every_field_an_answer_always_carries_is_required_so_a_generated_client_types_it_present():
    components = schema.raw_schema["components"]["schemas"]

    optional = {
        (name, field)
        for name, component in components.items()
        if not name.endswith("Request")
        for field in component.get("properties", {})
        if field not in component.get("required", [])
    }

    # the one field an answer may leave out: an error's "fields", there only when fields are at fault
    assert optional == {("ErrorBody", "fields")}


def test_the_rules_of_merchant_order_no_and_currency_are_in_the_schema_in_body_and_path(settings):
    paths, components = schema.raw_schema["paths"], schema.raw_schema["components"]["schemas"]
    rule = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 1, "maxLength": 64}

    assert (
        rule.items() <= components["OrderCreateRequest"]["properties"]["merchant_order_no"].items()
    )
    for path in ("/api/v1/orders/{merchant_order_no}", "/api/v1/orders/{merchant_order_no}/pay"):
        for operation in paths[path].values():
            [parameter] = [p for p in operation["parameters"] if p["name"] == "merchant_order_no"]
            assert rule.items() <= parameter["schema"].items(), path
    assert components["CurrencyEnum"]["enum"] == settings.ORDER_CURRENCIES


@pytest.fixture
def credentials(merchant, payer, settings):
    """Make TOKENS valid: the merchant's API key for the orders API, the service token for the
    message API."""
    settings.API_RATE_LIMIT = "100000/min"
    settings.MESSAGING_SERVICE_TOKEN = SERVICE_TOKEN
    settings.MESSAGING_HTTP_TOPICS = [BenchPing.TOPIC]
    Merchant.objects.filter(pk=merchant.pk).update(
        api_key_prefix=MERCHANT_KEY_PREFIX, api_key_hash=_hash_api_key(MERCHANT_KEY)
    )


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_schema(case, credentials):
    # Every check runs except "schema-valid data must be accepted": the schema cannot say that
    # payer_id must name an existing payer, or which long hostnames a URL validator refuses.
    # Say what is really sent, so schemathesis re-validates the case: a query parameter whose value
    # is an empty list or None is not sent at all; else `{"limit": 1, "<unknown>": []}` counts as
    # invalid data that the API "accepted".
    sent_query = {k: v for k, v in (case.query or {}).items() if v is not None and v != []}
    if sent_query != (case.query or {}):
        case.query = sent_query
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
