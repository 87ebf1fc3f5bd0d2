"""The bank protocol as the platform speaks it (``paysys/bank.py``): verifying signatures, and
asking the bank about a payment, where "no payment" and "no answer" must never be confused."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from paysys import bank
from paysys.gateway.models import BankNotify
from tests.gateway.test_notify import notify_body

PAYMENT = notify_body()  # the bank answers a query with what it notifies


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    "signature", ["\xe9abc", "\u00e9" * 64, "\u4e2d" + "0" * 63], ids=["latin1", "64-latin1", "cjk"]
)
def test_notify_with_a_non_ascii_signature_is_refused_with_401(signature):
    body = json.dumps(PAYMENT).encode()

    response = Client().post(
        "/gateway/bank/notify",
        body,
        content_type="application/json",
        headers={bank.SIGNATURE_HEADER: signature},
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert BankNotify.objects.count() == 0


def test_signature_check_accepts_only_the_hex_digest_of_the_body():
    body = b'{"a":1}'

    assert bank.signature_valid(body, bank.sign(body))
    assert bank.signature_valid(body, f"  {bank.sign(body).upper()} ")
    assert not bank.signature_valid(body, bank.sign(b'{"a":2}'))
    assert not bank.signature_valid(body, "")
    assert not bank.signature_valid(body, None)
    assert not bank.signature_valid(body, "\xe9" + bank.sign(body)[1:])


# --- query: a scripted bank -----------------------------------------------------------------


class ScriptedBank(BaseHTTPRequestHandler):
    """Answers every query with the server's ``answer``: (status, body bytes, signature or
    "sign" for a valid one, delay in seconds)."""

    def do_GET(self):
        status, body, signature, delay = self.server.answer
        time.sleep(delay)
        self.send_response(status)
        if signature == "sign":
            signature = bank.sign(body)
        if signature is not None:
            self.send_header(bank.SIGNATURE_HEADER, signature)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ScriptedBankServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the client gave up on a slow answer: nobody to answer


@pytest.fixture
def scripted_bank(settings):
    server = ScriptedBankServer(("127.0.0.1", 0), ScriptedBank)
    server.answer = (200, json.dumps(PAYMENT).encode(), "sign", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.BANK_QUERY_URL = f"http://127.0.0.1:{server.server_port}/sandbox/bank/payments/"
    yield server
    server.shutdown()
    server.server_close()


def query(server, status, body, signature="sign", delay=0):
    server.answer = (
        status,
        body if isinstance(body, bytes) else json.dumps(body).encode(),
        signature,
        delay,
    )
    return bank.query_payment(PAYMENT["out_trade_no"])


def test_a_signed_payment_is_returned(scripted_bank):
    assert query(scripted_bank, 200, PAYMENT) == PAYMENT


def test_a_signed_404_means_the_bank_knows_no_payment(scripted_bank):
    assert (
        query(scripted_bank, 404, {"status": "NOT_FOUND", "out_trade_no": PAYMENT["out_trade_no"]})
        is None
    )


@pytest.mark.parametrize(
    "status,body,signature",
    [
        (500, {"error": "down"}, "sign"),
        (503, b"", None),
        (302, b"", None),
        (200, PAYMENT, None),  # unsigned
        (200, PAYMENT, "0" * 64),  # wrongly signed
        (200, PAYMENT, "\xe9abc"),  # not even ASCII
        (404, b"<html>Not Found</html>", None),  # a proxy or a wrong URL, not the bank
        (200, b"not json", "sign"),
        (200, b"\xff\xfe", "sign"),
        (200, [PAYMENT], "sign"),
        (200, {"status": "SUCCESS"}, "sign"),  # lacks the payment
        (200, {**PAYMENT, "out_trade_no": "PSOTHER"}, "sign"),  # about another order
    ],
)
def test_an_answer_that_cannot_be_trusted_means_the_bank_is_unavailable(
    scripted_bank, status, body, signature
):
    with pytest.raises(bank.BankUnavailable):
        query(scripted_bank, status, body, signature)


def test_a_bank_too_slow_to_answer_is_unavailable(scripted_bank, monkeypatch):
    monkeypatch.setattr(bank, "QUERY_TIMEOUT_SECONDS", 0.2)

    with pytest.raises(bank.BankUnavailable):
        query(scripted_bank, 200, PAYMENT, delay=1)


def test_an_unreachable_bank_is_unavailable(settings):
    settings.BANK_QUERY_URL = "http://127.0.0.1:9/sandbox/bank/payments/"  # connection refused

    with pytest.raises(bank.BankUnavailable):
        bank.query_payment(PAYMENT["out_trade_no"])
