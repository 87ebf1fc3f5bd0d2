"""A bank client process of ``bench_payments`` (spawned: imports nothing that needs Django set up)."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

from paysys import bank


def post_notifies(args) -> list[tuple[str, float, int]]:
    """One client process: post each signed notify, keep-alive; returns (out_trade_no, sent, status).
    With an interval, the k-th notify is sent at ``start + offset + k * interval`` (a paced bank),
    else each as soon as the one before is answered. Plain ``http.client`` on one keep-alive
    connection: the bench's clients share the cores with the stack they measure, and requests'
    session machinery cost them about three times as much CPU per notify."""
    base, secret, documents, interval, offset = args
    url = urlsplit(base)
    connection = None
    sent = []
    start = time.time() + offset
    for k, document in enumerate(documents):
        if interval and (delay := start + k * interval - time.time()) > 0:
            time.sleep(delay)
        body = json.dumps(document, separators=(",", ":")).encode()
        started = time.time()
        headers = {
            "Content-Type": "application/json",
            bank.SIGNATURE_HEADER: bank.sign(body, secret=secret),
        }
        for _ in range(50):  # a 429 or 503 is back-pressure: wait and send again, as a bank does
            connection = connection or http.client.HTTPConnection(
                url.hostname, url.port, timeout=30
            )
            try:
                connection.request("POST", f"{url.path}/gateway/bank/notify", body, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.will_close:
                    connection.close()
                    connection = None
            except (
                http.client.HTTPException,
                OSError,
            ):  # a kept-alive connection the server closed
                connection.close()
                connection, status = None, 0
                continue  # a notify is idempotent: send it again on a new connection
            if status not in (429, 503):
                break
            time.sleep(0.2)
        sent.append((document["out_trade_no"], started, status))
    return sent
