"""Orders fixtures: the bank simulator and the gateway over real HTTP, paying with the notify held;
a bank that only counts the questions it is asked."""

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from paysys import bank as bank_protocol


@pytest.fixture(autouse=True)
def _own_bank_question_bound(monkeypatch, settings, tmp_path):
    """Every test counts its own questions to the bank: those of the test before it (in the
    last second) must not eat into its bound."""
    from orders import polling
    from paysys.core.ratelimit import SharedRateLimit

    settings.VAR_DIR = tmp_path
    monkeypatch.setattr(
        polling,
        "BANK_QUESTIONS",
        SharedRateLimit(f"test-{secrets.token_hex(4)}", lambda: settings.ORDER_POLL_MAX_PER_SECOND),
    )


@pytest.fixture
def bank(live_server, settings):
    """The bank simulator and the gateway, served over real HTTP."""
    settings.BANK_QUERY_URL = live_server.url + "/sandbox/bank/payments/"
    settings.BANK_NOTIFY_URL = live_server.url + "/gateway/bank/notify"
    return live_server


def pay_with_notify_held(pay_url: str) -> str:
    """The payer pays, but the bank's notify is held back: as if it were lost on the way.
    Returns the bank trade number."""
    response = Client().post(
        urlsplit(pay_url).path,
        {"hold": True},
        content_type="application/json",
        headers={"Authorization": f"Bearer {settings.SANDBOX_TOKEN}"},
    )
    assert response.status_code == 200, response.content
    return response.json()["bank_trade_no"]


@pytest.fixture
def make_payer_with_token(db, merchant):
    """``make() -> (payer, payer_token)``: a payer with an agreement with ``merchant``."""
    from paysys.core.services import payer_create_with_agreement

    count = iter(range(1, 10_000))

    def make():
        payer, _, token = payer_create_with_agreement(
            name=f"token-payer-{next(count)}", merchant_id=merchant.pk, issued_by="command:test"
        )
        return payer, token

    return make


class CountingBank:
    """A bank's query API on a real local port that knows no payment: every question is answered
    with a signed 404, and recorded (when it arrived, about which order)."""

    def __init__(self):
        self.questions: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        bank_ = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with bank_._lock:
                    bank_.questions.append((time.monotonic(), self.path.rsplit("/", 1)[-1]))
                body = b'{"error": "no payment"}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header(bank_protocol.SIGNATURE_HEADER, bank_protocol.sign(body))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            # a burst of questions must not overflow the listen backlog (5 by default): a dropped
            # SYN is retried a second later, and that question would arrive bunched with others
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/payments/"

    @property
    def asked(self) -> list[str]:
        with self._lock:
            return [out_trade_no for _, out_trade_no in self.questions]

    def most_in_any(self, seconds: float) -> int:
        """The most questions that arrived within any ``seconds`` (a sliding window)."""
        times = sorted(t for t, _ in self.questions)
        return max(
            (sum(1 for u in times[i:] if u - t < seconds) for i, t in enumerate(times)), default=0
        )


@pytest.fixture
def counting_bank(settings):
    counting = CountingBank()
    thread = threading.Thread(target=counting.server.serve_forever, daemon=True)
    thread.start()
    settings.BANK_QUERY_URL = counting.url
    yield counting
    counting.server.shutdown()
    counting.server.server_close()
