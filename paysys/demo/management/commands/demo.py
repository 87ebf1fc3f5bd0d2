"""``manage.py demo`` (``make demo``): the happy path over HTTP, as a merchant and a payer see it.

Against ``PUBLIC_BASE_URL``: as the demo merchant (the one ``make run``'s banner shows, kept in
``var/demo-merchant.json``) set the merchant up in the sandbox's merchant simulator (holding its
webhook secret as a merchant would), create three orders through the API, pay each at the bank
simulator, wait until each is paid, booked, and its notification received and verified by the
merchant simulator, and print a table. When nothing answers ``/healthz`` there, the demo starts
the stack itself (``manage.py runstack``) and stops it at the end; when a stack already runs on
this ``var/`` at another address, it says which command reaches it. The database is shared with
the server, so the stored bank notifies and vouchers are read straight from their tables.

Then the TCC half: the payer's wallet is credited by hand and pays one more order over
``POST /api/v1/orders/{no}/pay``; the merchant's balance (over the API), the payer's wallet and
points, and the vouchers must agree with every paid order, or the demo exits non-zero.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone

from accounting.models import Voucher, VoucherLine
from accounting.services import PAID_FROM
from accounts.selectors import fund_account_get, points_account_get
from accounts.services import wallet_credit
from paysys.core.models import Merchant, Payer, PayerAgreement
from paysys.core.money import fee_for, points_for
from paysys.core.services import agreement_issue
from paysys.core.stack import StackLock, describe, not_ours
from paysys.demo.management.commands.run_banner import demo_merchant_file, ensure_demo_merchant
from paysys.gateway.models import BankNotify

DEMO_ORDERS = [(1999, "Green tea, 250 g"), (4500, "Notebook"), (12800, "Headphones")]
# paid from the payer's wallet (TCC), after crediting it by hand
DEMO_WALLET_CREDIT = 20000
DEMO_WALLET_ORDERS = [(6600, "Coffee beans, 1 kg")]
FINAL_STATUSES = {"SUCCESS", "CLOSED", "FAILED"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class DemoOrder:
    merchant_order_no: str
    amount: int
    currency: str
    out_trade_no: str
    pay_url: str
    status: str = "CREATED"
    bank_trade_no: str = ""
    notify_stored: bool = False
    voucher: str = ""
    merchant_notified: str = ""  # "verified", or why the merchant simulator did not verify it
    method: str = "bank"

    @property
    def booked(self) -> bool:
        """Paid and booked: what the reliable-message flow promises for every payment."""
        return self.status == "SUCCESS" and bool(self.voucher)

    @property
    def settled(self) -> bool:
        """Booked, and the merchant's server received and verified the notification."""
        return self.booked and self.merchant_notified == "verified"


class Stack:
    """The stack the demo started: ``runstack`` (its own process group) and the groups of its children."""

    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(empty log)"

    def child_pids(self) -> list[int]:
        # runstack starts every Procfile process in its own session and logs "<name> started (pid=N)"
        return [int(pid) for pid in re.findall(r"(?:started|restarted) \(pid=(\d+)\)", self.log())]

    def workers_not_ready(self) -> list[str]:
        """Queues whose worker has not logged "<queue>@<host> ready." yet."""
        text = self.log()
        return [
            q
            for q in settings.SERVICE_QUEUES
            if not re.search(rf"\b{re.escape(q)}@\S+ ready\.", text)
        ]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM runstack (it stops every child's group); SIGKILL what is left."""
        if self.process.poll() is None:
            _killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid in self.child_pids():
            try:
                leads_its_group = os.getpgid(pid) == pid
            except OSError:
                continue  # gone, as it should be
            if leads_its_group:
                _killpg(pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _money(amount: int, currency: str) -> str:
    return f"{amount // 100}.{amount % 100:02d} {currency}"


class Command(BaseCommand):
    help = (
        "Pay four orders over HTTP against PUBLIC_BASE_URL (three at the bank, one from the payer's wallet; "
        "starting the stack if nothing answers) and show the outcome."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url",
            default=settings.PUBLIC_BASE_URL,
            help="default: PUBLIC_BASE_URL (%(default)s)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="seconds to wait for the orders (default 30)",
        )
        parser.add_argument(
            "--startup-timeout",
            type=float,
            default=90.0,
            help="seconds to wait for a stack the demo starts",
        )

    def handle(self, *args, **options):
        if (
            not settings.SANDBOX_ENABLED
        ):  # before anything is written: no demo merchant in production
            raise CommandError(
                "the demo pays at the bank simulator, which is off here (DEBUG=false or "
                "SANDBOX_ENABLED=false): run it on the embedded default or a development stack"
            )
        # SIGTERM / SIGHUP unwind like Ctrl-C, so a stack the demo started is always stopped
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_interrupt)
        base = options["base_url"].rstrip("/")
        self.http = requests.Session()
        # the demo talks to its own server: a proxy from the environment must not get in the way
        self.http.trust_env = (urlsplit(base).hostname or "") not in LOCAL_HOSTS
        stack, self.base, self.started_stack = None, base, False
        health = self.healthz(base)
        if health is None:
            stack = self.start_stack(base, options["startup_timeout"])
            self.started_stack = True
        elif health.status_code == 503:
            raise CommandError(
                f"{base}/healthz answers 503: {health.text[:300]}\n"
                "A service database is down; start it (or fix DATABASE_URL) and run `make demo` again."
            )
        elif health.status_code != 200:
            raise CommandError(
                f"{base}/healthz answers {health.status_code}: something other than paysys is listening there. "
                "Stop it, or run paysys on another port: PORT=8001 make demo."
            )
        else:
            self.say(f"using the stack already running at {base}")
        try:
            self.run_demo(base, options["timeout"])
        finally:
            if stack is not None:
                stack.stop()  # first: printing may fail (a closed pipe) and must not leave the stack running
                self.say(f"stopped the stack the demo started (its log: {stack.log_path})")

    # --- the stack ---------------------------------------------------------------------------

    def healthz(self, base: str) -> requests.Response | None:
        try:
            return self.http.get(f"{base}/healthz", timeout=3)
        except requests.RequestException:
            return None

    def start_stack(self, base: str, timeout: float) -> Stack:
        parts = urlsplit(base)
        if parts.hostname not in LOCAL_HOSTS:
            raise CommandError(
                f"nothing answers at {base}/healthz and it is not this machine, so the demo cannot start it.\n"
                "Start paysys there, or point PUBLIC_BASE_URL at a local address (default http://127.0.0.1:8000)."
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        holder = StackLock(settings.VAR_DIR).holder()
        if holder:
            other = (
                "make demo"
                if holder.get("port") in (None, 8000)
                else f"PORT={holder['port']} make demo"
            )
            raise CommandError(
                f"nothing answers at {base}, but a paysys stack already runs on {settings.VAR_DIR} ({describe(holder)}).\n"
                f"Run the demo against it: {other}"
            )
        self.say(
            f"nothing answers at {base}; starting the stack (web, workers, beat) on port {port}"
        )
        call_command("migrate_all", stdout=StringIO())
        connections.close_all()
        log_path = settings.VAR_DIR / "demo-stack.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PORT": str(port),
            "PUBLIC_BASE_URL": base,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
        }
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "runstack", "--no-banner"],
                cwd=settings.BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stopping it reaches everything
            )
        stack = Stack(process, log_path)
        try:
            self.stdout.write(
                f"  waiting for {base}/healthz and the workers (log: {log_path}) ", ending=""
            )
            self.stdout.flush()
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise CommandError(
                        f"the stack exited (code {process.returncode}) before {base}/healthz answered. "
                        f"Is port {port} taken? Last lines of {log_path}:\n{stack.log_tail()}"
                    )
                health = self.healthz(base)
                web_up = health is not None and health.status_code == 200
                waiting_for = stack.workers_not_ready()
                if web_up and not waiting_for:
                    self.stdout.write(" up")
                    return stack
                if time.monotonic() > deadline:
                    if (
                        web_up
                    ):  # the web is up; a worker's "ready" line may just be hidden by LOG_LEVEL
                        self.stdout.write(
                            f' web up; no "ready" seen from {", ".join(waiting_for)}, going on'
                        )
                        return stack
                    raise CommandError(
                        f"{base}/healthz did not answer 200 within {timeout:.0f} s. Last lines of {log_path}:\n"
                        f"{stack.log_tail()}"
                    )
                self.stdout.write(".", ending="")
                self.stdout.flush()
                time.sleep(0.5)
        except BaseException:
            stack.stop()
            raise

    # --- the happy path ----------------------------------------------------------------------

    def run_demo(self, base: str, timeout: float) -> None:
        stamp = timezone.now().strftime("%Y%m%d%H%M%S%f")
        saved, created = ensure_demo_merchant()
        merchant = Merchant.objects.get(pk=saved["merchant_id"])
        payer = Payer.objects.get(pk=saved["payer_id"])
        self.say(
            f"{'created' if created else 'using'} the demo merchant #{merchant.pk} and payer #{payer.pk} "
            f"(saved in {demo_merchant_file()})"
        )
        self.set_up_merchant_server(base, merchant)
        self.http.headers["Authorization"] = f"Bearer {saved['api_key']}"

        orders = [
            self.create_order(base, f"demo-{stamp}-{i}", amount, subject, payer.pk)
            for i, (amount, subject) in enumerate(DEMO_ORDERS, start=1)
        ]
        before = self.accounts_snapshot(base, merchant, payer)
        for order in orders:
            self.pay(order)
        orders += self.pay_from_wallet(base, stamp, merchant, payer)
        self.wait(base, orders, merchant.pk, timeout)
        self.print_table(orders)
        self.conclude(orders, timeout)
        self.check_accounts(base, merchant, payer, orders, before, timeout)
        self.refund_one(base, orders, timeout)

    def refund_one(self, base: str, orders: list[DemoOrder], timeout: float) -> None:
        """Refund half of the first bank-paid order: a TCC holds the merchant's money and the
        payer's points, the bank is asked (reliable message), its notify (or its refund query)
        makes the refund SUCCEEDED (docs/refunds.md)."""
        order = next(o for o in orders if o.method == "bank" and o.status == "SUCCESS")
        amount = order.amount // 2
        response = self.request(
            "POST",
            f"{base}/api/v1/orders/{order.merchant_order_no}/refunds",
            json={
                "merchant_refund_no": f"{order.merchant_order_no}-r1",
                "amount": amount,
                "reason": "demo: the customer returned half",
            },
        )
        if response.status_code not in (200, 201):
            raise CommandError(
                f"POST /api/v1/orders/{order.merchant_order_no}/refunds answered "
                f"{response.status_code}: {response.text[:500]}"
            )
        refund = response.json()
        self.stdout.write("")  # a step of its own after the accounts' verdict, its lines aligned
        self.say(
            f"refund {refund['refund_no']} of {_money(amount, order.currency)} on {order.merchant_order_no}: "
            f"{refund['status']} (the merchant's money held, the bank asked)"
        )
        deadline = time.monotonic() + timeout
        while refund["status"] == "PENDING" and time.monotonic() < deadline:
            time.sleep(0.5)
            refund = self.request("GET", f"{base}/api/v1/refunds/{refund['refund_no']}").json()
        if refund["status"] != "SUCCEEDED":
            raise CommandError(
                f"refund {refund['refund_no']} is {refund['status']} after {timeout:.0f} s "
                f"{refund.get('failure_reason') or ''}: the orders, polling, funds, points and sandbox workers run "
                "it (`make run` starts them all); see /admin/orders/refund/."
            )
        self.say(
            self.style.SUCCESS(
                f"refund {refund['refund_no']} SUCCEEDED: the bank said so; order {order.merchant_order_no} is "
                f"{refund['order_status']} with refunded_amount {refund['refunded_amount']}"
            )
        )

    def set_up_merchant_server(self, base: str, merchant) -> None:
        """What a merchant does once: keep the webhook secret paysys gave it on its server (here the
        sandbox's merchant simulator, over HTTP like any outside party)."""
        url = f"{base}/sandbox/merchant/{merchant.pk}"
        response = self.request(
            "POST",
            url,
            json={"webhook_secret": merchant.webhook_secret},
            headers=self.sandbox_control,
        )
        if response.status_code == 404:
            raise CommandError(
                f"the merchant simulator is not there: POST {url} answered 404. It is part of the sandbox app "
                "(mounted where SANDBOX is enabled); update your checkout and run `make demo` again."
            )
        if not response.ok:
            raise CommandError(
                f"setting the merchant up in the merchant simulator failed ({response.status_code}): "
                f"{response.text[:500]}"
            )
        self.say(f"merchant server: the sandbox merchant simulator at {merchant.notify_url}")

    def create_order(
        self, base: str, merchant_order_no: str, amount: int, subject: str, payer_id: int
    ) -> DemoOrder:
        body = {
            "merchant_order_no": merchant_order_no,
            "amount": amount,
            "currency": "CNY",
            "subject": subject,
            "payer_id": payer_id,
        }
        response = self.request("POST", f"{base}/api/v1/orders", json=body)
        if response.status_code != 201:
            raise CommandError(
                f"POST /api/v1/orders answered {response.status_code}: {response.text[:500]}"
            )
        data = response.json()
        self.say(
            f"order {merchant_order_no}: {_money(amount, 'CNY')} created, status {data['status']}"
        )
        return DemoOrder(
            merchant_order_no,
            amount,
            data["currency"],
            data["out_trade_no"],
            data["pay_url"],
            data["status"],
        )

    def pay(self, order: DemoOrder) -> None:
        response = self.request("POST", order.pay_url, json={})
        if response.status_code == 404:
            raise CommandError(
                f"the bank simulator is not there: POST {order.pay_url.split('/sandbox/')[0]}/sandbox/bank/pay/... "
                "answered 404. It is part of the sandbox app; update your checkout (git pull) and run `make demo` again."
            )
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not response.ok or not data.get("bank_trade_no"):
            raise CommandError(
                f"paying {order.merchant_order_no} at the bank simulator failed ({response.status_code}): "
                f"{response.text[:500]}"
            )
        order.bank_trade_no = data["bank_trade_no"]
        self.say(
            f"order {order.merchant_order_no}: paid at the bank, bank_trade_no {order.bank_trade_no}"
        )

    def wait(self, base: str, orders: list[DemoOrder], merchant_id: int, timeout: float) -> None:
        self.stdout.write(
            f"  waiting up to {timeout:.0f} s for the bank notifies, the orders, their vouchers and the merchant's "
            "notifications ",
            ending="",
        )
        deadline = time.monotonic() + timeout
        while True:
            for order in orders:
                if order.status not in FINAL_STATUSES:
                    response = self.request(
                        "GET", f"{base}/api/v1/orders/{order.merchant_order_no}"
                    )
                    if response.status_code == 200:
                        order.status = response.json()["status"]
                order.notify_stored = BankNotify.objects.filter(
                    out_trade_no=order.out_trade_no
                ).exists()
                voucher = Voucher.objects.filter(source=f"order.paid:{order.out_trade_no}").first()
                order.voucher = f"#{voucher.pk}" if voucher else ""
            self.read_merchant_server(base, merchant_id, orders)
            if (
                all(o.settled or o.status in FINAL_STATUSES - {"SUCCESS"} for o in orders)
                or time.monotonic() > deadline
            ):
                break
            self.stdout.write(".", ending="")
            self.stdout.flush()
            time.sleep(0.5)
        self.stdout.write(" done")

    def read_merchant_server(self, base: str, merchant_id: int, orders: list[DemoOrder]) -> None:
        """What the merchant simulator received, by order: "verified" once a notification for it
        passed the standardwebhooks verifier, else the last reason it did not."""
        response = self.request(
            "GET", f"{base}/sandbox/merchant/{merchant_id}/received", headers=self.sandbox_control
        )
        if response.status_code != 200:
            return
        received = response.json()["results"]  # newest first
        for order in orders:
            if order.merchant_notified == "verified":
                continue
            mine = [d for d in received if order.out_trade_no in (d.get("body") or "")]
            if any(d["verified"] and d["status_code"] < 300 for d in mine):
                order.merchant_notified = "verified"
            elif mine:
                order.merchant_notified = (
                    f"NOT verified: {mine[0]['error'] or mine[0]['status_code']}"
                )

    def print_table(self, orders: list[DemoOrder]) -> None:
        header = (
            "merchant_order_no",
            "amount",
            "paid by",
            "status",
            "bank notify stored?",
            "voucher",
            "merchant notified",
        )
        rows = [
            (
                o.merchant_order_no,
                _money(o.amount, o.currency),
                o.method,
                o.status,
                ("yes" if o.notify_stored else "NO") if o.method == "bank" else "-",
                o.voucher or "none yet",
                o.merchant_notified or "not yet",
            )
            for o in orders
        ]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        line = "  ".join("{:<%d}" % w for w in widths)
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(line.format(*header).rstrip()))
        for row in rows:
            self.stdout.write(line.format(*row).rstrip())
        self.stdout.write("")

    def conclude(self, orders: list[DemoOrder], timeout: float) -> None:
        if all(o.settled for o in orders):
            self.stdout.write(
                self.style.SUCCESS(
                    "every order is paid (SUCCESS), booked (one voucher each), and its notification was received and "
                    "verified (standardwebhooks) by the merchant's server"
                )
            )
            self.say(
                f"what the merchant's server received: {self.base}/admin/sandbox/merchantdelivery/; "
                f"what paysys sent: {self.base}/admin/notifications/notification/"
                + (
                    " (the demo stops the stack it started: open them next to `make run`, "
                    "which prints the admin login)"
                    if self.started_stack
                    else ""
                )
            )
            return
        if all(o.booked for o in orders):
            unverified = [
                f"{o.merchant_order_no} ({o.merchant_notified})"
                for o in orders
                if o.merchant_notified
            ]
            if unverified:
                raise CommandError(
                    f"the merchant simulator received but did not verify: {', '.join(unverified)}. See what it received "
                    "at /admin/sandbox/merchantdelivery/ and what paysys sent at /admin/notifications/notification/."
                )
            raise CommandError(
                f"paid and booked, but after {timeout:.0f} s the merchant's server has not been notified of "
                f"{', '.join(o.merchant_order_no for o in orders if not o.settled)}. Are the notifications and "
                "notify-delivery workers running (`make run` starts them)? The records wait in "
                "/admin/notifications/notification/ and are delivered once they run."
            )
        unbooked = [o.merchant_order_no for o in orders if o.status == "SUCCESS" and not o.voucher]
        if unbooked and len(unbooked) == sum(o.status == "SUCCESS" for o in orders) == len(orders):
            raise CommandError(
                f"paid but not booked after {timeout:.0f} s: {', '.join(unbooked)}. Is the accounting worker running "
                "(`make worker QUEUE=accounting`)? Its order.paid messages wait in the outbox and are delivered "
                "once it runs (see /admin/messaging/message/?service=orders)."
            )
        missing = [
            o.merchant_order_no
            for o in orders
            if o.method == "bank" and not o.notify_stored and o.status != "SUCCESS"
        ]
        if missing:
            raise CommandError(
                f"no bank notify was stored for {', '.join(missing)}. The bank simulator sends it from the "
                "sandbox worker to PUBLIC_BASE_URL/gateway/bank/notify: is the sandbox worker running "
                "(`make worker QUEUE=sandbox`, or the whole stack with `make run`) and does PUBLIC_BASE_URL "
                "point at this server? Then run `make demo` again."
            )
        bad = [
            f"{o.merchant_order_no} ({o.status})"
            for o in orders
            if o.status in {"CLOSED", "FAILED"}
        ]
        if bad:
            raise CommandError(
                f"orders ended without being paid: {', '.join(bad)}. See them in admin (/admin/orders/order/)."
            )
        stuck = [o.merchant_order_no for o in orders if o.status == "PAYING"]
        if stuck:
            raise CommandError(
                f"still PAYING when the wait ended: {', '.join(stuck)}. Completing an order needs the orders, funds "
                "and points workers (`make run` starts them all); recovery finishes it once they are up."
            )
        raise CommandError(
            f"every bank notify is stored by the gateway, but after {timeout:.0f} s not every order is paid and booked: "
            "check that the core, orders and accounting workers run (`make run` starts them all); stored messages "
            "are redelivered by recovery once they do (see /admin/messaging/message/)."
        )

    # --- TCC: balance payments, and balances, points and vouchers that agree ------------------

    def pay_from_wallet(self, base: str, stamp: str, merchant, payer) -> list[DemoOrder]:
        """Credit the payer's wallet by hand (booked by accounting), then the wallet pays an order
        under the payer's agreement with the demo merchant (a fresh one each run: the token is
        shown once, so the one an earlier run issued is replaced)."""
        self.wallet_entry = wallet_credit(
            payer_id=payer.pk,
            amount=DEMO_WALLET_CREDIT,
            reason="demo top-up",
            credited_by="command:demo",
        )
        earlier = PayerAgreement.objects.filter(
            payer_id=payer.pk, merchant_id=merchant.pk, in_force=True
        ).first()
        agreement, payer_token = agreement_issue(
            payer_id=payer.pk, merchant_id=merchant.pk, issued_by="command:demo", replace=True
        )
        self.say(
            f"payer #{payer.pk}'s wallet credited {_money(DEMO_WALLET_CREDIT, 'CNY')}; {agreement} issued "
            "(its payer token lets this merchant, and no other, charge the wallet)"
        )
        if earlier is not None:
            self.say(
                f"  it replaces {earlier} (issued by {earlier.token_issued_by}): that one is revoked, "
                "and its payer token no longer pays"
            )
        paid = []
        for i, (amount, subject) in enumerate(DEMO_WALLET_ORDERS, start=len(DEMO_ORDERS) + 1):
            order = self.create_order(base, f"demo-{stamp}-{i}", amount, subject, payer.pk)
            order.method = "balance"
            response = self.request(
                "POST",
                f"{base}/api/v1/orders/{order.merchant_order_no}/pay",
                json={"method": "balance", "payer_token": payer_token},
            )
            if response.status_code != 200:
                raise CommandError(
                    f"POST /api/v1/orders/{order.merchant_order_no}/pay answered {response.status_code}: "
                    f"{response.text[:500]}"
                    + (
                        " (a service is down: are the funds and points workers and databases up?)"
                        if response.status_code == 503
                        else ""
                    )
                )
            order.status = response.json()["status"]
            self.say(
                f"order {order.merchant_order_no}: paid from the wallet, status {order.status}"
            )
            paid.append(order)
        return paid

    def accounts_snapshot(self, base: str, merchant, payer) -> dict:
        """What the merchant (over the API) and the payer hold now; the demo compares changes, so
        earlier runs with the same merchant or payer do not matter."""
        response = self.request("GET", f"{base}/api/v1/balance")
        if response.status_code != 200:
            raise CommandError(
                f"GET /api/v1/balance answered {response.status_code}: {response.text[:300]}"
            )
        wallet = fund_account_get(owner_type="payer", owner_id=payer.pk, currency="CNY")
        points = points_account_get(payer_id=payer.pk)
        return {
            "merchant": response.json(),
            "wallet": (wallet.balance, wallet.frozen) if wallet else (0, 0),
            "points": (points.balance, points.pending) if points else (0, 0),
        }

    def expected_changes(self, merchant, orders: list[DemoOrder]) -> dict:
        paid = [o for o in orders if o.status == "SUCCESS"]
        return {
            "merchant available": sum(
                o.amount - fee_for(o.amount, merchant.fee_rate_bp) for o in paid
            ),
            "merchant frozen": 0,
            "merchant pending_in": 0,
            "payer wallet balance": DEMO_WALLET_CREDIT
            - sum(o.amount for o in paid if o.method == "balance"),
            "payer wallet frozen": 0,
            "payer points": sum(points_for(o.amount, o.currency) for o in paid),
            "payer points pending": 0,
        }

    def observed_changes(self, base: str, merchant, payer, before: dict) -> dict:
        now = self.accounts_snapshot(base, merchant, payer)
        return {
            "merchant available": now["merchant"]["available"] - before["merchant"]["available"],
            "merchant frozen": now["merchant"]["frozen"] - before["merchant"]["frozen"],
            "merchant pending_in": now["merchant"]["pending_in"] - before["merchant"]["pending_in"],
            "payer wallet balance": now["wallet"][0] - before["wallet"][0],
            "payer wallet frozen": now["wallet"][1] - before["wallet"][1],
            "payer points": now["points"][0] - before["points"][0],
            "payer points pending": now["points"][1] - before["points"][1],
        }

    def voucher_problems(self, merchant, orders: list[DemoOrder]) -> list[str]:
        """Each paid order booked once, from the right account; the wallet credit booked once."""
        problems = []
        for o in orders:
            if o.status != "SUCCESS":
                continue
            fee = fee_for(o.amount, merchant.fee_rate_bp)
            want = sorted(
                line
                for line in [
                    (PAID_FROM[o.method], o.amount, 0),
                    ("2202", 0, o.amount - fee),
                    ("6001", 0, fee),
                ]
                if line[1] or line[2]
            )
            got = sorted(
                VoucherLine.objects.filter(
                    voucher__source=f"order.paid:{o.out_trade_no}"
                ).values_list("account__code", "debit", "credit")
            )
            if got != want:
                problems.append(
                    f"voucher of {o.merchant_order_no}: {got or 'none'}, expected {want}"
                )
        got = sorted(
            VoucherLine.objects.filter(
                voucher__source=f"wallet.credited:{self.wallet_entry.pk}"
            ).values_list("account__code", "debit", "credit")
        )
        want = [("1002", DEMO_WALLET_CREDIT, 0), ("2241", 0, DEMO_WALLET_CREDIT)]
        if got != want:
            problems.append(f"voucher of the wallet credit: {got or 'none'}, expected {want}")
        return problems

    def print_vouchers(self, orders: list[DemoOrder]) -> None:
        sources = [f"order.paid:{o.out_trade_no}" for o in orders] + [
            f"wallet.credited:{self.wallet_entry.pk}"
        ]
        self.stdout.write(self.style.MIGRATE_HEADING("vouchers (Dr / Cr account amount)"))
        for source in sources:
            lines = VoucherLine.objects.filter(voucher__source=source).order_by(
                "-debit", "account__code"
            )
            text = ", ".join(
                f"{'Dr' if line.debit else 'Cr'} {line.account.code} {line.debit or line.credit}"
                for line in lines.select_related("account")
            )
            self.stdout.write(f"{source:<48} {text or 'not booked yet'}")
        self.stdout.write("")

    def check_accounts(
        self, base: str, merchant, payer, orders: list[DemoOrder], before: dict, timeout: float
    ) -> None:
        """Merchant balance, payer wallet and points, and vouchers must agree with the paid orders
        once phase two has run (confirms are asynchronous); exit non-zero if they do not."""
        expected = self.expected_changes(merchant, orders)
        deadline = time.monotonic() + timeout
        while True:
            observed = self.observed_changes(base, merchant, payer, before)
            problems = self.voucher_problems(merchant, orders)
            if (observed == expected and not problems) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.print_vouchers(orders)
        width = max(len(k) for k in expected)
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"{'change during the demo':<{width}}  expected  observed")
        )
        for key, want in expected.items():
            mark = "" if observed[key] == want else "   <- differs"
            self.stdout.write(f"{key:<{width}}  {want:>8}  {observed[key]:>8}{mark}")
        self.stdout.write("")
        if observed != expected or problems:
            raise CommandError(
                "balances, points and vouchers do not agree with the paid orders after "
                f"{timeout:.0f} s:\n  "
                + "\n  ".join(problems + [k for k in expected if observed[k] != expected[k]])
                + "\nPhase two runs in the orders, funds and points workers and accounting books from messages: "
                "are they all running? `manage.py recover_tcc` and `reconcile` tell more."
            )
        self.stdout.write(
            self.style.SUCCESS(
                "merchant balance, payer wallet, payer points and vouchers agree with every paid order"
            )
        )

    # --- helpers -----------------------------------------------------------------------------

    @property
    def sandbox_control(self) -> dict:
        """The simulators' control endpoints need the sandbox's token (the same settings as the stack)."""
        return {"Authorization": f"Bearer {settings.SANDBOX_TOKEN}"}

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            response = self.http.request(method, url, timeout=10, **kwargs)
        except requests.RequestException as exc:
            raise CommandError(
                f"{method} {url} failed: {exc}. Is the server still running?"
            ) from exc
        if response.status_code == 401:  # this checkout's merchant or sandbox token unknown there
            raise CommandError(
                f"{method} {url} answered 401: {not_ours(self.base, settings.VAR_DIR)}"
            )
        return response

    def say(self, text: str) -> None:
        self.stdout.write(f"  {text}")
