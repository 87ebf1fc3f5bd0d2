"""The bank protocol, as both sides speak it (the platform's gateway and the bank simulator).

* Pay URL: ``{BANK_PAY_URL}{token}``, the token a signed, URL-safe blob of the platform order
  (out_trade_no, amount, currency, subject, expiry), the way page-pay redirects carry a signed
  order to Alipay. Anyone may read it; nobody without the shared secret may change it.
* Notify: ``POST /gateway/bank/notify`` with a JSON body and ``X-Bank-Signature: <hex>``,
  HMAC-SHA256 of the raw body under the shared secret.
* Query: ``GET {BANK_QUERY_URL}{out_trade_no}``, answered with the same signed JSON.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.core import signing

SIGNATURE_HEADER = "X-Bank-Signature"
PAY_TOKEN_SALT = "paysys.bank.pay"


def sign(body: bytes) -> str:
    return hmac.new(settings.BANK_SHARED_SECRET.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(sign(body), signature.strip().lower())


def pay_url(*, out_trade_no: str, amount: int, currency: str, subject: str, expires_at: int) -> str:
    token = signing.dumps(
        {"o": out_trade_no, "a": amount, "c": currency, "s": subject, "e": expires_at},
        key=settings.BANK_SHARED_SECRET,
        salt=PAY_TOKEN_SALT,
        compress=True,
    )
    return f"{settings.PUBLIC_BASE_URL}/sandbox/bank/pay/{token}"


def read_pay_token(token: str) -> dict | None:
    try:
        data = signing.loads(token, key=settings.BANK_SHARED_SECRET, salt=PAY_TOKEN_SALT)
    except signing.BadSignature:
        return None
    return {"out_trade_no": data["o"], "amount": data["a"], "currency": data["c"], "subject": data["s"], "expires_at": data["e"]}


def query_payment(out_trade_no: str) -> dict | None:
    """Ask the bank what happened to ``out_trade_no``. The answer is signed like a notify.

    Returns the payment dict, or None when the bank knows no payment or cannot be asked now
    (unreachable, bad signature): polling simply asks again later.
    """
    import json
    import logging

    import requests

    try:
        response = requests.get(f"{settings.BANK_QUERY_URL}{out_trade_no}", timeout=3)
    except requests.RequestException as exc:
        logging.getLogger(__name__).warning("bank query for %s failed: %s", out_trade_no, exc)
        return None
    if response.status_code == 404:
        return None
    if response.status_code != 200 or not signature_valid(response.content, response.headers.get(SIGNATURE_HEADER)):
        logging.getLogger(__name__).warning("bank query for %s: unusable answer %s", out_trade_no, response.status_code)
        return None
    return json.loads(response.content)
