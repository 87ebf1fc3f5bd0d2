"""Integer inputs cost nothing to refuse (security round 3, item 1).

``"amount": "1e500000"`` used to answer 500 after 14.5 s while holding the interpreter lock, so one
merchant API key froze a web process: the amount field turned the text into a Decimal and then an
integer before bounding it. Now every integer the API takes is bounded before any numeric
conversion, and the error never repeats a huge value. Each case is timed in CPU seconds of the
thread that handled it (the attack is CPU; wall time on a shared machine is noise).
"""

from __future__ import annotations

import gc
import re
import time
import uuid
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from orders.models import Order

pytestmark = pytest.mark.django_db(databases="__all__")

CPU_BUDGET = 0.05  # seconds per request

ATTACKS = [
    "1e500000",
    "1e999990",
    "1e999999999",
    "1e5000",
    "-Infinity",
    "Infinity",
    "NaN",
    "1" * 5000,
    "0x10",
    " 1_000 ",
    "1e-999999999",
    "19.999",
    "-0",
    "١٢٣",
]


def timed(call):
    """The response and the CPU seconds it cost, without a garbage collection pass that happened to
    fall in it (the test process holds a large heap; a full collection alone can take 0.1 s)."""
    gc.disable()
    try:
        started = time.thread_time()
        response = call()
        return response, time.thread_time() - started
    finally:
        gc.enable()


def order_body(payer, **overrides):
    return {
        "merchant_order_no": f"I-{uuid.uuid4().hex[:10]}",
        "amount": 100,
        "currency": "CNY",
        "subject": "s",
        "payer_id": payer.pk,
        **overrides,
    }


@pytest.mark.parametrize("amount", ATTACKS)
def test_an_amount_in_any_text_form_is_a_cheap_400_that_does_not_echo_it(api, payer, amount):
    response, cpu = timed(
        lambda: api.post("/api/v1/orders", order_body(payer, amount=amount), format="json")
    )

    assert response.status_code == 400, response.content[:300]
    assert "amount" in response.json()["error"]["fields"]
    assert cpu < CPU_BUDGET, f"{amount[:20]!r} cost {cpu:.3f} s of CPU"
    assert len(response.content) < 1000  # the value is never formatted into the answer
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "amount, hint",
    [
        ("19.99", "send 1999 for 19.99"),
        ("1999", "send 1999, not"),
        (19.99, "send 1999 for 19.99"),
        (1999.0, "send 1999, not 1999.0"),
    ],
)
def test_a_plausible_amount_in_the_wrong_json_type_is_still_told_what_to_send(
    api, payer, amount, hint
):
    response = api.post("/api/v1/orders", order_body(payer, amount=amount), format="json")

    assert response.status_code == 400
    assert hint in str(response.json()["error"]["fields"]["amount"])


# --- every integer the API takes, found in its own schema ----------------------------------------


def integer_inputs() -> list[tuple[str, str, str, str]]:
    """(method, path, "body" or "query", name) of every integer input of every operation."""
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    found = []
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "M-1", path)
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["schema"].get("type") == "integer":
                    found.append((method.upper(), concrete, "query", parameter["name"]))
            body = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
            )
            body = components[body["$ref"].rsplit("/", 1)[1]] if "$ref" in body else body
            for name, prop in body.get("properties", {}).items():
                if prop.get("type") == "integer":
                    found.append((method.upper(), concrete, "body", name))
    return found


INTEGER_INPUTS = integer_inputs()

not_an_integer = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[-+]?\d{0,8}(\.\d{0,8})?[eE][-+]?\d{1,12}\Z"),
    st.sampled_from(ATTACKS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63)),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def test_the_schema_lists_the_integer_inputs_it_takes():
    assert ("POST", "/api/v1/orders", "body", "amount") in INTEGER_INPUTS
    assert ("GET", "/api/v1/orders", "query", "limit") in INTEGER_INPUTS


@pytest.mark.parametrize("method, path, where, name", INTEGER_INPUTS)
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=not_an_integer)
def test_any_non_integer_in_any_integer_input_is_a_4xx_within_the_cpu_budget(
    api, payer, method, path, where, name, value
):
    if where == "query":
        text = value if isinstance(value, str) else str(value)
        assume(
            not (text.isascii() and text.isdigit() and len(text) <= 3 and 0 < int(text) <= 200)
        )  # a query's integers come as text
        response, cpu = timed(
            lambda: api.generic(method, path, data="", QUERY_STRING=urlencode({name: text[:2000]}))
        )
    else:
        response, cpu = timed(
            lambda: api.generic(
                method,
                path,
                data=_json(order_body(payer, **{name: value})),
                content_type="application/json",
            )
        )

    assert 400 <= response.status_code < 500, (
        name,
        value,
        response.status_code,
        response.content[:300],
    )
    assert response.json()["error"]
    assert cpu < CPU_BUDGET, f"{name}={str(value)[:20]!r} cost {cpu:.3f} s of CPU"


def _json(body: dict) -> str:
    import json

    return json.dumps(body)


@pytest.mark.parametrize("amount", ["0", 0.0, "0.00"])
def test_a_zero_amount_in_the_wrong_type_gets_no_hint_toward_another_invalid_amount(
    api, payer, amount
):
    response = api.post("/api/v1/orders", order_body(payer, amount=amount), format="json")

    assert response.status_code == 400
    assert "send 0" not in str(response.json()["error"]["fields"]["amount"])
