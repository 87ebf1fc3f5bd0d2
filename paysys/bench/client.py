"""A bank client process of ``bench_payments`` (spawned: imports nothing that needs Django set up)."""

from __future__ import annotations

import json
import time

import requests

from paysys import bank


def post_notifies(args) -> list[tuple[str, float, int]]:
    """One client process: post each signed notify, keep-alive; returns (out_trade_no, sent, status).
    With an interval, the k-th notify is sent at ``start + offset + k * interval`` (a paced bank),
    else each as soon as the one before is answered."""
    base, secret, documents, interval, offset = args
    session = requests.Session()
    session.trust_env = False
    sent = []
    start = time.time() + offset
    for k, document in enumerate(documents):
        if interval and (delay := start + k * interval - time.time()) > 0:
            time.sleep(delay)
        body = json.dumps(document, separators=(",", ":")).encode()
        started = time.time()
        for _ in range(50):  # a 429 or 503 is back-pressure: wait and send again, as a bank does
            response = session.post(
                f"{base}/gateway/bank/notify",
                data=body,
                timeout=30,
                headers={
                    "Content-Type": "application/json",
                    bank.SIGNATURE_HEADER: bank.sign(body, secret=secret),
                },
            )
            if response.status_code not in (429, 503):
                break
            time.sleep(0.2)
        sent.append((document["out_trade_no"], started, response.status_code))
    return sent
