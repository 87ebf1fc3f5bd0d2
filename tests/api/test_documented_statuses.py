"""Every status an operation answers is in the published schema, and every status the schema lists
for an operation is one it answers (issue 15).

schemathesis (test_schema.py) validates what its generated requests get back. Most errors it
cannot reach: another merchant's order, a wallet that cannot pay, a throttled API key, a busy web
process, a method or media type the operation does not take. Here each (operation, status) is
provoked for real, in-process, and schemathesis' own checks validate the answer against that
operation of the schema: the status is documented, the body matches its schema, the documented
headers (Retry-After) are sent. ``test_the_table_provokes_exactly_what_the_schema_documents``
keeps this table and the schema equal, so a status added on either side must appear on both.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
import requests
import schemathesis
from django.db import OperationalError, connections
from django.test import override_settings
from rest_framework.test import APIClient
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.services import wallet_credit
from notifications.services import endpoint_disable
from orders import payments as order_payments
from orders.creation import order_create
from orders.models import Order, Refund
from paysys.bench.contracts import BenchPing
from paysys.core.services import agreement_issue
from paysys.messaging import outbox
from paysys.wsgi import application
from tests.notifications.factories import make_attempt, make_notification
from tests.phase_two import run_phase_two
from tests.statuses import force_status

SERVICE_TOKEN = "statuses-service-token-0123456789abcdef01"
TOPIC = BenchPing.TOPIC
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

with override_settings(
    MESSAGING_SERVICE_TOKEN=SERVICE_TOKEN
):  # the message API is in the schema only when on
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
PATHS = schema.raw_schema["paths"]
OPERATIONS = sorted(
    operation["operationId"] for methods in PATHS.values() for operation in methods.values()
)


def definition(operation_id: str) -> dict:
    operation = schema.find_operation_by_id(operation_id)
    return PATHS[operation.path][operation.method.lower()]


def documented(operation_id: str) -> set[int]:
    return {int(code) for code in definition(operation_id)["responses"]}


# --- a merchant's world, and requests to one operation of it ---------------------------------


class World:
    """A merchant with an open order, a notification and a prepared message; another merchant's order."""

    def __init__(self, make_merchant, payer):
        (self.merchant, self.key), (other, _) = make_merchant(), make_merchant()
        self.payer = payer
        self.order = order_create(
            merchant=self.merchant,
            merchant_order_no="ST-1",
            amount=1999,
            currency="CNY",
            subject="Tea",
            payer_id=payer.pk,
        )[0]
        self.other_order = order_create(
            merchant=other,
            merchant_order_no="ST-OTHER",
            amount=5,
            currency="CNY",
            subject="x",
            payer_id=payer.pk,
        )[0]
        self.notification = make_notification(self.merchant)
        make_attempt(self.notification)
        self.message_id = outbox.prepare(
            TOPIC,
            {"n": 1},
            using="default",
            business_key="st-1",
            check_back="https://producer.example/check",
        )
        self.refund = Refund.objects.create(
            refund_no="RFST1",
            merchant_id=self.merchant.pk,
            merchant_refund_no="ST-R1",
            order=self.order,
            out_trade_no=self.order.out_trade_no,
            amount=1,
            currency="CNY",
            method="bank",
        )

    def path(self, operation_id: str, **overrides) -> str:
        values = {
            "merchant_order_no": self.order.merchant_order_no,
            "notification_id": self.notification.webhook_id,
            "message_id": str(self.message_id),
            "refund_no": self.refund.refund_no,
            **overrides,
        }
        return schema.find_operation_by_id(operation_id).path.format(**values)

    def client(self, operation_id: str, *, auth: bool = True) -> APIClient:
        client = APIClient()
        if auth:
            token = SERVICE_TOKEN if operation_id.startswith("messages_") else self.key
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    def call(
        self,
        operation_id: str,
        *,
        client: APIClient | None = None,
        method: str | None = None,
        path: dict | None = None,
        query: dict | None = None,
        body=None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        auth: bool = True,
        **headers,
    ):
        operation = schema.find_operation_by_id(operation_id)
        url = self.path(operation_id, **(path or {})) + (f"?{urlencode(query)}" if query else "")
        client = client or self.client(operation_id, auth=auth)
        if raw is None and body is not None:
            import json

            raw = json.dumps(body).encode()
        return client.generic(
            method or operation.method.upper(),
            url,
            raw or b"",
            content_type=content_type,
            headers=headers,
        )


@pytest.fixture
def world(make_merchant, payer, settings):
    settings.MESSAGING_SERVICE_TOKEN = SERVICE_TOKEN
    settings.MESSAGING_HTTP_TOPICS = [TOPIC]
    settings.API_RATE_LIMIT = "100000/min"
    return World(make_merchant, payer)


def assert_documented(operation_id: str, response) -> None:
    """schemathesis' response checks on a Django test response, against ``operation_id``."""
    request = requests.Request(
        response.wsgi_request.method, response.wsgi_request.build_absolute_uri()
    ).prepare()
    answer = Response(
        status_code=response.status_code,
        headers={k.lower(): [v] for k, v in response.items()},
        content=response.content,
        request=request,
        elapsed=0.0,
        verify=False,
    )
    operation = schema.find_operation_by_id(operation_id)
    match = re.fullmatch(
        re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", operation.path), response.wsgi_request.path
    )
    operation.Case(path_parameters=match.groupdict() if match else {}).validate_response(
        answer, checks=CHECKS
    )


# --- what every operation can get from the code around its view -----------------------------


def unknown_query_parameter(world, operation_id):
    return world.call(operation_id, query={"colour": "red"}, body=valid_body(world, operation_id))


def no_credentials(world, operation_id):
    return world.call(operation_id, auth=False)


def a_method_the_path_does_not_take(world, operation_id):
    taken = {method.upper() for method in PATHS[schema.find_operation_by_id(operation_id).path]}
    return world.call(
        operation_id, method=next(m for m in ("PUT", "PATCH", "DELETE") if m not in taken)
    )


def an_accept_without_json(world, operation_id):
    return world.call(operation_id, body=valid_body(world, operation_id), Accept="text/html")


def a_body_too_large(world, operation_id):
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        return world.call(operation_id, raw=b"{" + b" " * 100 + b"}")


def not_json(world, operation_id):
    return world.call(
        operation_id, raw=b"merchant_order_no=A-1", content_type="application/x-www-form-urlencoded"
    )


def throttled(world, operation_id):
    with override_settings(API_RATE_LIMIT="1/min"):
        world.call(operation_id, body=valid_body(world, operation_id))
        return world.call(operation_id, body=valid_body(world, operation_id))


@pytest.fixture(autouse=True)
def _producer_resolves(producer_dns):
    pass


def busy(world, operation_id):
    """Every thread of the web process is taken (paysys.core.serving.BufferedWSGI, one thread
    here) when the request arrives: the server answers it 503 before any of Django runs, on any
    path. The answer is handed to the schema checks as the test client would give it."""
    import asyncio
    import json

    from django.http import HttpResponse
    from django.test import RequestFactory

    from paysys.core.serving import BufferedWSGI

    inside, release = threading.Event(), threading.Event()

    def held(environ, start_response):
        inside.set()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    app = BufferedWSGI(held, threads=1, queue_seconds=0.05, read_timeout=5, max_body=65536)
    method, path = (
        schema.find_operation_by_id(operation_id).method.upper(),
        world.path(operation_id),
    )

    async def request(method: str, path: str) -> tuple[int, list, bytes]:
        sent, messages = [], [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        await app(
            {
                "type": "http",
                "method": method,
                "path": path,
                "query_string": b"",
                "http_version": "1.1",
                "headers": [(b"host", b"testserver")],
                "client": ("127.0.0.1", 1),
                "server": ("testserver", 80),
            },
            receive,
            send,
        )
        return sent[0]["status"], sent[0]["headers"], sent[1]["body"]

    async def while_held():
        holder = asyncio.create_task(request("GET", "/api/schema/"))
        while not inside.is_set():
            await asyncio.sleep(0.01)
        try:
            return await request(method, path)
        finally:
            release.set()
            await holder

    status, headers, body = asyncio.run(while_held())
    response = HttpResponse(
        body, status=status, headers={k.decode(): v.decode() for k, v in headers}
    )
    response.wsgi_request = RequestFactory().generic(method, path)
    response.json = lambda: json.loads(body)
    return response


def valid_body(world, operation_id) -> dict | None:
    return {
        "orders_create": {
            "merchant_order_no": "ST-NEW",
            "amount": 100,
            "currency": "CNY",
            "subject": "s",
            "payer_id": world.payer.pk,
        },
        "orders_pay": {"method": "balance", "payer_token": "ppt_wrong"},
        "refunds_create": {"merchant_refund_no": "ST-R2", "amount": 100, "reason": "r"},
        "messages_prepare": {
            "topic": TOPIC,
            "payload": {"n": 2},
            "business_key": "st-new",
            "check_back_url": "https://producer.example/check",
        },
    }.get(operation_id)


def takes_a_body(operation_id) -> bool:
    return "requestBody" in definition(operation_id)


def throttled_operation(operation_id) -> bool:
    return not operation_id.startswith("messages_")  # trusted internal producers are not throttled


def surrounding(operation_id) -> dict[int, Callable]:
    cases = {
        400: unknown_query_parameter,
        401: no_credentials,
        405: a_method_the_path_does_not_take,
        406: an_accept_without_json,
        413: a_body_too_large,
        503: busy,
    }
    if takes_a_body(operation_id):
        cases[415] = not_json
    if throttled_operation(operation_id):
        cases[429] = throttled
    return cases


# --- what each operation's own code answers --------------------------------------------------


def agreement_token(world) -> str:
    """The payer's agreement with the world's merchant (a new one each call, replacing the last)."""
    return agreement_issue(
        payer_id=world.payer.pk, merchant_id=world.merchant.pk, issued_by="test", replace=True
    )[1]


def pay_body(token: str) -> dict:
    return {"method": "balance", "payer_token": token}


def paid_from_the_wallet(world, operation_id):
    wallet_credit(
        payer_id=world.payer.pk, amount=10_000, reason="top-up", credited_by="command:test"
    )
    return world.call(operation_id, body=pay_body(agreement_token(world)))


def the_wallet_cannot_afford_it(world, operation_id):
    return world.call(operation_id, body=pay_body(agreement_token(world)))


def closed_order(world, operation_id):
    force_status(Order.objects.filter(pk=world.order.pk), status=Order.Status.CLOSED)
    return world.call(operation_id, body=pay_body(agreement_token(world)))


def refunded(times: int = 1, amount: int = 100):
    """The world's order paid from the wallet, then refunded ``times`` with the same request."""

    def provoke(world, operation_id):

        paid_from_the_wallet(world, "orders_pay")
        run_phase_two()
        for _ in range(times):
            response = world.call(
                operation_id, body={**valid_body(world, operation_id), "amount": amount}
            )
            run_phase_two()
        return response

    return provoke


def disabled_endpoint(world, operation_id):
    endpoint_disable(world.notification.endpoint, reason="410 Gone")
    return world.call(operation_id)


def confirmed_message(world, operation_id):
    outbox.confirm(world.message_id, using="default")
    return world.call(operation_id)


def replay(body_change: dict):
    def provoke(world, operation_id):
        body = {
            "merchant_order_no": "ST-1",
            "amount": 1999,
            "currency": "CNY",
            "subject": "Tea",
            "payer_id": world.payer.pk,
            **body_change,
        }
        return world.call(operation_id, body=body)

    return provoke


def prepare_again_with_another_payload(world, operation_id):
    return world.call(
        operation_id, body={**valid_body(world, operation_id), "business_key": "st-1"}
    )


def plain(world, operation_id):
    return world.call(operation_id, body=valid_body(world, operation_id))


def someone_elses(**path):
    def provoke(world, operation_id):
        return world.call(
            operation_id,
            path={key: value(world) for key, value in path.items()},
            body=valid_body(world, operation_id),
        )

    return provoke


OTHER_ORDER = someone_elses(merchant_order_no=lambda world: world.other_order.merchant_order_no)
OWN: dict[str, dict[int, Callable]] = {
    "orders_create": {201: plain, 200: replay({}), 409: replay({"amount": 2000})},
    "orders_list": {200: plain},
    "orders_retrieve": {200: plain, 404: OTHER_ORDER},
    "orders_pay": {
        200: paid_from_the_wallet,
        402: the_wallet_cannot_afford_it,
        403: plain,
        404: OTHER_ORDER,
        409: closed_order,
    },
    "refunds_create": {
        201: refunded(),
        200: refunded(times=2),
        402: refunded(amount=1999),
        404: OTHER_ORDER,
        409: plain,
    },
    "refunds_list": {200: plain, 404: OTHER_ORDER},
    "refunds_retrieve": {200: plain, 404: someone_elses(refund_no=lambda world: "RFunknown")},
    "balance_retrieve": {200: plain},
    "balance_entries_list": {200: plain},
    "notifications_list": {200: plain},
    "notifications_retrieve": {
        200: plain,
        404: someone_elses(notification_id=lambda world: "msg_unknown"),
    },
    "notifications_resend": {
        202: plain,
        404: someone_elses(notification_id=lambda world: "msg_unknown"),
        409: disabled_endpoint,
    },
    "messages_prepare": {201: plain, 409: prepare_again_with_another_payload},
    "messages_retrieve": {
        200: plain,
        404: someone_elses(message_id=lambda world: "00000000-0000-4000-8000-000000000000"),
    },
    "messages_confirm": {
        200: plain,
        404: someone_elses(message_id=lambda world: "00000000-0000-4000-8000-000000000000"),
    },
    "messages_discard": {
        200: plain,
        404: someone_elses(message_id=lambda world: "00000000-0000-4000-8000-000000000000"),
        409: confirmed_message,
    },
}
# a balance payment's tries run on threads with connections of their own: they must see committed rows
COMMITTED = {
    ("orders_pay", 200),
    ("orders_pay", 402),
    ("refunds_create", 201),
    ("refunds_create", 200),
    ("refunds_create", 402),
}


def table() -> dict[tuple[str, int], Callable]:
    cases = {}
    for operation_id in OPERATIONS:
        cases.update(
            {
                (operation_id, status): provoke
                for status, provoke in surrounding(operation_id).items()
            }
        )
        cases.update(
            {
                (operation_id, status): provoke
                for status, provoke in OWN.get(operation_id, {}).items()
            }
        )
    return cases


TABLE = table()


def test_the_table_provokes_exactly_what_the_schema_documents():
    for operation_id in OPERATIONS:
        provoked = {status for op, status in TABLE if op == operation_id}
        assert provoked == documented(operation_id), operation_id


def run_case(world, operation_id, status):
    response = TABLE[(operation_id, status)](world, operation_id)

    assert response.status_code == status, (
        operation_id,
        response.status_code,
        response.content[:300],
    )
    assert_documented(operation_id, response)
    return response


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    "operation_id, status", sorted(set(TABLE) - COMMITTED), ids=lambda v: str(v)
)
def test_each_status_is_documented_and_answered_as_documented(world, operation_id, status):
    run_case(world, operation_id, status)


@pytest.mark.django_db(databases="__all__", transaction=True)
@pytest.mark.parametrize("operation_id, status", sorted(COMMITTED), ids=lambda v: str(v))
def test_each_balance_payment_status_is_documented(world, operation_id, status, monkeypatch):
    monkeypatch.setattr(order_payments, "PAY_CONFIRM_WAIT_SECONDS", 0)  # nobody runs phase two here

    run_case(world, operation_id, status)


@pytest.mark.django_db(databases="__all__")
def test_every_503_and_a_throttled_429_say_when_to_retry(world):
    assert int(busy(world, "orders_retrieve")["Retry-After"]) >= 1
    assert int(throttled(world, "orders_retrieve")["Retry-After"]) >= 1


@pytest.mark.django_db(databases="__all__")
def test_a_database_that_does_not_answer_is_the_documented_503_with_retry_after(world):
    def refuse(execute, sql, params, many, context):  # the orders database stops answering
        raise OperationalError(2003, "Can't connect to MySQL server")

    with connections["orders"].execute_wrapper(refuse):
        response = world.call("orders_list")

    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"
    assert response["Retry-After"] == "5"
    assert_documented("orders_list", response)
