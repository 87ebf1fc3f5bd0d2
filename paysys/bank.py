"""The bank protocol, as both sides speak it (the platform's gateway and the bank simulator).

* Pay URL: ``{BANK_PAY_URL}{token}``, the token a signed, URL-safe blob of the platform order
  (out_trade_no, amount, currency, subject, expiry), the way page-pay redirects carry a signed
  order to Alipay. Anyone may read it; nobody without the shared secret may change it. One order
  has one pay URL: every read of the order gives the same string.
* Notify: ``POST /gateway/bank/notify`` with a JSON body and ``X-Bank-Signature: <hex>``,
  HMAC-SHA256 of the raw body under the shared secret.
* Query: ``GET {BANK_QUERY_URL}{out_trade_no}``, answered with the same signed JSON.
* Order status (the bank asks the platform, before it takes a payment, whether the order is still
  payable: a payer must not pay an order twice, e.g. at the bank after paying from the wallet):
  ``GET {BANK_ORDER_STATUS_URL}{out_trade_no}`` with ``X-Bank-Signature`` = HMAC of the
  out_trade_no, answered ``{"out_trade_no", "status", "payable"}`` signed like a notify.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import requests
from django.conf import settings
from django.core import signing

SIGNATURE_HEADER = "X-Bank-Signature"
PAY_TOKEN_SALT = "paysys.bank.pay"
QUERY_TIMEOUT_SECONDS = 3
PAYMENT_FIELDS = ("bank_trade_no", "out_trade_no", "amount", "currency", "status", "paid_at")


class BankUnavailable(Exception):
    """The bank cannot be asked now: unreachable, too slow, or an answer we cannot trust.

    It says nothing about the payment: never read it as "not paid". Callers ask again later (order
    expiry closes anyway only after a grace period; a payment arriving then is flagged for a human).
    """


def sign(body: bytes, *, secret: str | None = None) -> str:
    """HMAC of ``body`` under ``secret``: the platform's BANK_SHARED_SECRET unless the caller is
    the other side (the bank simulator passes its own SANDBOX_BANK_SECRET)."""
    key = secret if secret is not None else settings.BANK_SHARED_SECRET
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, signature: str | None, *, secret: str | None = None) -> bool:
    if not signature:
        return False
    try:
        given = signature.strip().lower().encode("ascii")
    except UnicodeEncodeError:  # a hex digest is ASCII: anything else is simply not it
        return False
    return hmac.compare_digest(sign(body, secret=secret).encode("ascii"), given)


class _PayTokenSigner(signing.TimestampSigner):
    """``signing.dumps``' format (what :func:`read_pay_token` reads), its time field the order's
    expiry instead of the current second: the token, hence the pay URL, is the same on every read."""

    def __init__(self, *, at: int, **kwargs):
        super().__init__(**kwargs)
        self.at = at

    def timestamp(self) -> str:
        return signing.b62_encode(self.at)


def pay_url(*, out_trade_no: str, amount: int, currency: str, subject: str, expires_at: int) -> str:
    token = _PayTokenSigner(
        at=expires_at, key=settings.BANK_SHARED_SECRET, salt=PAY_TOKEN_SALT
    ).sign_object(
        {"o": out_trade_no, "a": amount, "c": currency, "s": subject, "e": expires_at},
        compress=True,
    )
    return f"{settings.BANK_PAY_URL}{token}"


def read_pay_token(token: str, *, secret: str | None = None) -> dict | None:
    try:
        data = signing.loads(
            token,
            key=secret if secret is not None else settings.BANK_SHARED_SECRET,
            salt=PAY_TOKEN_SALT,
        )
    except signing.BadSignature:
        return None
    return {
        "out_trade_no": data["o"],
        "amount": data["a"],
        "currency": data["c"],
        "subject": data["s"],
        "expires_at": data["e"],
    }


def query_payment(out_trade_no: str) -> dict | None:
    """Ask the bank what happened to ``out_trade_no``. The answer is signed like a notify.

    Returns the payment dict, or None when the bank answers (signed 404) that it knows no
    payment. Raises :class:`BankUnavailable` when it cannot be asked now (connection error,
    timeout, another status, bad signature, unreadable answer): "no answer" is never "not paid",
    since callers close orders on None. An unsigned 404 (a proxy, a wrong URL) is no answer.
    """
    try:
        response = requests.get(
            f"{settings.BANK_QUERY_URL}{out_trade_no}", timeout=QUERY_TIMEOUT_SECONDS
        )
    except requests.RequestException as exc:
        raise BankUnavailable(f"bank query for {out_trade_no} failed: {exc}") from exc
    if response.status_code not in (200, 404):
        raise BankUnavailable(
            f"bank query for {out_trade_no}: unexpected status {response.status_code}"
        )
    if not signature_valid(response.content, response.headers.get(SIGNATURE_HEADER)):
        raise BankUnavailable(
            f"bank query for {out_trade_no}: answer {response.status_code} not signed by the bank"
        )
    if response.status_code == 404:
        return None
    try:
        payment = json.loads(response.content)
    except ValueError as exc:  # UnicodeDecodeError included
        raise BankUnavailable(f"bank query for {out_trade_no}: answer is not JSON") from exc
    if not isinstance(payment, dict) or any(field not in payment for field in PAYMENT_FIELDS):
        raise BankUnavailable(f"bank query for {out_trade_no}: answer lacks payment fields")
    if payment["out_trade_no"] != out_trade_no:
        raise BankUnavailable(
            f"bank query for {out_trade_no}: answer is about {payment['out_trade_no']!r}"
        )
    return payment


# --- order status: the bank asks the platform ----------------------------------------------------

ORDER_STATUS_TIMEOUT_SECONDS = 2


def order_status_document(
    *, out_trade_no: str, status: str | None, payable: bool
) -> tuple[bytes, str]:
    """The platform's signed answer: the body and its signature."""
    body = json.dumps(
        {"out_trade_no": out_trade_no, "status": status, "payable": payable}, separators=(",", ":")
    ).encode()
    return body, sign(body)


def ask_order_payable(out_trade_no: str, *, url: str, secret: str) -> dict | None:
    """The bank's side: ``{"out_trade_no", "status", "payable"}`` as the platform signed it, or None
    when the platform cannot be asked or its answer cannot be trusted. None is no verdict: a bank
    takes the payment anyway (the platform flags a double payment for a human)."""
    try:
        response = requests.get(
            f"{url}{out_trade_no}",
            timeout=ORDER_STATUS_TIMEOUT_SECONDS,
            headers={SIGNATURE_HEADER: sign(out_trade_no.encode(), secret=secret)},
        )
    except requests.RequestException:
        return None
    if response.status_code != 200 or not signature_valid(
        response.content, response.headers.get(SIGNATURE_HEADER), secret=secret
    ):
        return None
    try:
        answer = json.loads(response.content)
    except ValueError:
        return None
    if (
        not isinstance(answer, dict)
        or answer.get("out_trade_no") != out_trade_no
        or not isinstance(answer.get("payable"), bool)
    ):
        return None
    return answer


# --- refunds: the platform asks the bank to give a payment back ---------------------------------
#
# * Request: ``POST {BANK_REFUND_URL}`` with ``{"refund_no", "out_trade_no", "bank_trade_no",
#   "amount", "currency", "reason"}`` signed like a notify; the bank answers (signed)
#   ``{"refund_no", "status": "PROCESSING"}``: the same refund_no again is the same refund.
# * Notify: ``POST /gateway/bank/refund-notify`` ``{"refund_no", "out_trade_no", "amount",
#   "status": "SUCCESS" | "REFUSED", "reason"}`` signed.
# * Query: ``GET {BANK_REFUND_URL}{refund_no}``: the same document, or a signed 404.

REFUND_FIELDS = ("refund_no", "out_trade_no", "amount", "status")


def refund_url() -> str:
    """``BANK_REFUND_URL``, else next to the payment query (``…/payments/`` -> ``…/refunds/``)."""
    explicit = getattr(settings, "BANK_REFUND_URL", "")
    return explicit or settings.BANK_QUERY_URL.rstrip("/").rsplit("/", 1)[0] + "/refunds/"


def request_refund(document: dict) -> dict:
    """Send a refund to the bank; returns its signed answer. Raises BankUnavailable when the bank
    did not take it (the caller sends it again: the bank is idempotent on refund_no)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    try:
        response = requests.post(
            refund_url(),
            data=body,
            timeout=QUERY_TIMEOUT_SECONDS,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body)},
        )
    except requests.RequestException as exc:
        raise BankUnavailable(f"refund {document['refund_no']} not sent: {exc}") from exc
    return _signed_answer(response, document["refund_no"], ok=(200, 201))


def query_refund(refund_no: str) -> dict | None:
    """The bank's refund document, None when it answers (signed 404) that it has no such refund."""
    try:
        response = requests.get(f"{refund_url()}{refund_no}", timeout=QUERY_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise BankUnavailable(f"refund query for {refund_no} failed: {exc}") from exc
    if response.status_code == 404 and signature_valid(
        response.content, response.headers.get(SIGNATURE_HEADER)
    ):
        return None
    answer = _signed_answer(response, refund_no, ok=(200,))
    if any(field not in answer for field in REFUND_FIELDS):
        raise BankUnavailable(f"refund query for {refund_no}: answer lacks refund fields")
    return answer


def _signed_answer(response, refund_no: str, *, ok: tuple[int, ...]) -> dict:
    if response.status_code not in ok:
        raise BankUnavailable(f"refund {refund_no}: bank answered {response.status_code}")
    if not signature_valid(response.content, response.headers.get(SIGNATURE_HEADER)):
        raise BankUnavailable(f"refund {refund_no}: answer not signed by the bank")
    try:
        answer = json.loads(response.content)
    except ValueError as exc:
        raise BankUnavailable(f"refund {refund_no}: answer is not JSON") from exc
    if not isinstance(answer, dict) or answer.get("refund_no") != refund_no:
        raise BankUnavailable(f"refund {refund_no}: answer is about something else")
    return answer
