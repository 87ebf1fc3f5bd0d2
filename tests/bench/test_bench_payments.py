"""``manage.py bench_payments --quick``, as CI runs it: a small smoke of whole payments through a
real stack (the embedded default, started as ``make run`` starts it). No timing is asserted
(machines here are shared): only that every payment completed, none was lost or doubled,
reconcile --strict was clean and the figures were printed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from django.conf import settings

from tests.core.test_runstack import embedded_env, free_port, stack  # noqa: F401 - fixture
from tests.reconcile.conftest import paid  # noqa: F401 - fixture


def test_bench_payments_quick_pays_every_order_once_and_refunds_each_once_through_the_embedded_stack(
    stack, tmp_path
):
    """``--quick`` as CI runs it, with ``--refunds 10`` (one stack, one run: both cost a stack's
    start-up): 60 payments, then 6 of the paid orders refunded (whole and half), each SUCCEEDED
    once, its notification acknowledged, and reconcile --strict still clean."""
    port, result = _bench(
        stack, tmp_path, "--quick", "--json", "--timeout", "240", "--refunds", "10"
    )

    assert (result["payments"], result["done"], result["lost"], result["doubled"]) == (60, 60, 0, 0)
    assert result["reconcile_strict"] is True
    assert result["payments_per_s"] > 0 and result["baseline_per_s"] > 0 and result["ratio"] > 0
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"}
    assert (result["broker"], result["cache"]) == ("filesystem", "filebased")
    refunds = result["refunds"]
    assert (refunds["refunds"], refunds["succeeded"], refunds["lost"], refunds["doubled"]) == (
        6,
        6,
        0,
        0,
    ), refunds
    assert refunds["refunds_per_s"] > 0 and set(refunds["answers"]) <= {
        "200",
        "201",
        "503",
    }  # JSON keys
    requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).raise_for_status()


def test_bench_payments_refuses_more_refunds_than_wallet_paid_orders():
    from django.core.management.base import CommandError

    from paysys.bench.management.commands.bench_payments import _refund_count

    assert _refund_count(60, {"refunds": 10, "balance_share": 0.1}) == 6
    for options in ({"refunds": 20, "balance_share": 0.1}, {"refunds": 101, "balance_share": 1}):
        with pytest.raises(CommandError):
            _refund_count(60, options)


def _bench(stack, tmp_path, *args: str) -> tuple[int, dict]:
    """``manage.py bench_payments *args`` against a fresh embedded stack: (its port, the JSON result)."""
    port = free_port()
    env = embedded_env(tmp_path / "var", PORT=str(port), PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate_all"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    runstack = stack(**{k: v for k, v in env.items() if k in ("PORT", "PUBLIC_BASE_URL")})
    deadline = time.monotonic() + 90
    while not _healthy(port):
        assert runstack.poll() is None and time.monotonic() < deadline, stack.log.read_text()[
            -3000:
        ]
        time.sleep(0.5)

    bench = subprocess.run(
        [sys.executable, "manage.py", "bench_payments", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )

    assert runstack.poll() is None
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    return port, json.loads(bench.stdout.strip().splitlines()[-1])


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_paced_bench_client_sends_each_notify_on_its_schedule(tmp_path):
    """``--rate``: the k-th notify of a client leaves at start + offset + k * interval, not sooner."""
    import http.server
    import threading

    from paysys.bench.client import post_notifies

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        documents = [{"out_trade_no": f"T{k}"} for k in range(4)]
        before = time.time()
        sent = post_notifies(
            (f"http://127.0.0.1:{server.server_port}", "s" * 32, documents, 0.25, 0.1)
        )
    finally:
        server.shutdown()
    assert [(no, status) for no, _, status in sent] == [
        ("T0", 200),
        ("T1", 200),
        ("T2", 200),
        ("T3", 200),
    ]
    for k, (_, at, _) in enumerate(sent):
        assert at >= before + 0.1 + k * 0.25 - 0.01  # never ahead of its schedule
    assert sent[-1][1] - sent[0][1] >= 0.74


@pytest.mark.django_db(databases="__all__", transaction=True)
def test_the_check_names_a_payment_whose_voucher_is_missing_or_whose_points_are_doubled(
    paid, merchant
):
    """A payment is done only when every service booked it once: the check counts the order's
    rows in each service, not only the merchant's acknowledgement."""
    from accounting.models import Voucher
    from accounts.models import PointsEntry
    from paysys.bench.management.commands.bench_payments import Command

    orders = [{"out_trade_no": o.out_trade_no} for o in paid]
    acks = {o.out_trade_no: (time.time(), 1) for o in paid}
    check = Command()._check
    assert check(merchant, orders, acks, settle_seconds=0)["lost"] == 0

    first, second = (o.out_trade_no for o in paid)
    posting = PointsEntry.objects.get(out_trade_no=first, kind="posted")
    posting.pk, posting.xid = None, "another-transaction"
    posting.save()
    Voucher.objects.filter(source=f"order.paid:{second}").delete()
    outcome = check(merchant, orders, acks, settle_seconds=0)
    assert (outcome["lost_examples"], outcome["doubled_examples"]) == ([second], [first])
    assert outcome["settled_at"] > 0


def test_a_wallet_payer_pays_again_after_a_503_as_its_retry_after_says():
    """A 503 (a busy web process, a service that did not answer) changed nothing: the bench's
    payer waits Retry-After and pays again, as docs/api.md tells payers to; a 402 is final."""
    import http.server
    import threading
    from collections import Counter

    from paysys.bench.management.commands.bench_payments import Command

    calls: Counter = Counter()

    class Api(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls[self.path] += 1
            busy = self.path.endswith("/A/pay") and calls[self.path] < 3
            self.send_response(503 if busy else 200 if "/A/" in self.path else 402)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    orders = [
        {"merchant_order_no": no, "out_trade_no": f"PS-{no}", "payer_id": 1} for no in ("A", "B")
    ]
    sent, statuses = {}, Counter()
    try:
        Command()._pay_from_wallets(
            f"http://127.0.0.1:{server.server_port}",
            {},
            [(type("Payer", (), {"pk": 1}), "token")],
            orders,
            sent,
            statuses,
            0,
            2,
        )
    finally:
        server.shutdown()
    assert (calls["/api/v1/orders/A/pay"], calls["/api/v1/orders/B/pay"]) == (3, 1)
    assert statuses == Counter({200: 1, 402: 1}) and set(sent) == {"PS-A", "PS-B"}
