"""A fast local merchant server for ``manage.py bench_notify`` and ``bench_payments`` (its own
process): answers every POST with 204 at once, except paths starting with ``/hang``, which it holds
open without a word until the sender gives up (a hanging merchant).

    python -m paysys.bench.receiver PORT [WEBHOOK_SECRET LOG_PATH]

With a webhook secret, every notification is verified as a merchant would (``standardwebhooks``,
the third-party verifier) before the 204, and one line per notification is appended to LOG_PATH:
``<unix time> <webhook-id> <out_trade_no> ok|bad`` (a refund's notification: its refund_no); a notification that does not verify is a 400.
"""

from __future__ import annotations

import asyncio
import sys
import time

ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
REFUSED = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


class Verifier:
    """Verifies each notification and logs its arrival (bench_payments' merchant)."""

    def __init__(self, secret: str, log_path: str):
        from standardwebhooks.webhooks import Webhook

        self.webhook = Webhook(secret)
        self.log = open(log_path, "a", buffering=1)

    def check(self, head: bytes, body: bytes) -> bool:
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        try:
            data = self.webhook.verify(body, headers)
            ok, out_trade_no = True, data["data"].get("refund_no") or data["data"]["out_trade_no"]
        except Exception:  # noqa: BLE001 - anything that does not verify is counted, never trusted
            ok, out_trade_no = False, "-"
        self.log.write(
            f"{time.time():.6f} {headers.get('webhook-id', '-')} {out_trade_no} {'ok' if ok else 'bad'}\n"
        )
        return ok


verifier: Verifier | None = None


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # HTTP/1.1 keep-alive: requests one after another on the connection
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the sender closed the connection
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            if head.split(b" ", 2)[1].startswith(b"/hang"):
                await reader.read()  # until the sender gives up and closes
                return
            writer.write(ANSWER if verifier is None or verifier.check(head, body) else REFUSED)
            await writer.drain()
    except (
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        ConnectionError,
        ValueError,
        IndexError,
    ):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 3:
        verifier = Verifier(sys.argv[2], sys.argv[3])
    try:  # the receiver must not be the bottleneck of what it measures
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
