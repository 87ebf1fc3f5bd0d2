"""``manage.py demo`` (``make demo``): the happy path over HTTP, as a merchant and a payer see it.

Against ``PUBLIC_BASE_URL``: as the demo merchant (the one ``make run``'s banner shows, kept in
``var/demo-merchant.json``) create three orders through the API, pay each at the bank simulator,
wait for the outcome and print a table. When nothing answers ``/healthz`` there, the demo starts
the stack itself (``manage.py runstack``) and stops it at the end; when a stack already runs on
this ``var/`` at another address, it says which command reaches it. The database is shared with
the server, so the stored bank notifies and vouchers are read straight from their tables.
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

from accounting.models import Voucher
from paysys.core.stack import StackLock, describe
from paysys.demo.management.commands.run_banner import ensure_demo_merchant
from paysys.gateway.models import BankNotify

DEMO_ORDERS = [(1999, "Green tea, 250 g"), (4500, "Notebook"), (12800, "Headphones")]
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

    @property
    def settled(self) -> bool:
        """Paid and booked: what the reliable-message flow promises for every payment."""
        return self.status == "SUCCESS" and bool(self.voucher)


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
        return [q for q in settings.SERVICE_QUEUES if not re.search(rf"\b{re.escape(q)}@\S+ ready\.", text)]

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
    help = "Pay three orders over HTTP against PUBLIC_BASE_URL (starting the stack if nothing answers) and show the outcome."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default=settings.PUBLIC_BASE_URL, help="default: PUBLIC_BASE_URL (%(default)s)")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the orders (default 30)")
        parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds to wait for a stack the demo starts")

    def handle(self, *args, **options):
        # SIGTERM / SIGHUP unwind like Ctrl-C, so a stack the demo started is always stopped
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_interrupt)
        base = options["base_url"].rstrip("/")
        self.http = requests.Session()
        # the demo talks to its own server: a proxy from the environment must not get in the way
        self.http.trust_env = (urlsplit(base).hostname or "") not in LOCAL_HOSTS
        stack = None
        health = self.healthz(base)
        if health is None:
            stack = self.start_stack(base, options["startup_timeout"])
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
            other = "make demo" if holder.get("port") in (None, 8000) else f"PORT={holder['port']} make demo"
            raise CommandError(
                f"nothing answers at {base}, but a paysys stack already runs on {settings.VAR_DIR} ({describe(holder)}).\n"
                f"Run the demo against it: {other}"
            )
        self.say(f"nothing answers at {base}; starting the stack (web, workers, beat) on port {port}")
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
            self.stdout.write(f"  waiting for {base}/healthz and the workers (log: {log_path}) ", ending="")
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
                    if web_up:  # the web is up; a worker's "ready" line may just be hidden by LOG_LEVEL
                        self.stdout.write(f" web up; no \"ready\" seen from {', '.join(waiting_for)}, going on")
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
        merchant, created = ensure_demo_merchant()
        self.say(f"{'created' if created else 'using'} the demo merchant #{merchant['merchant_id']} "
                 f"and payer #{merchant['payer_id']} (saved in var/demo-merchant.json)")
        self.http.headers["Authorization"] = f"Bearer {merchant['api_key']}"

        orders = [self.create_order(base, f"demo-{stamp}-{i}", amount, subject, merchant["payer_id"])
                  for i, (amount, subject) in enumerate(DEMO_ORDERS, start=1)]
        for order in orders:
            self.pay(order)
        self.wait(base, orders, timeout)
        self.print_table(orders)
        self.conclude(orders, timeout)

    def create_order(self, base: str, merchant_order_no: str, amount: int, subject: str, payer_id: int) -> DemoOrder:
        body = {"merchant_order_no": merchant_order_no, "amount": amount, "currency": "CNY", "subject": subject,
                "payer_id": payer_id}
        response = self.request("POST", f"{base}/api/v1/orders", json=body)
        if response.status_code != 201:
            raise CommandError(f"POST /api/v1/orders answered {response.status_code}: {response.text[:500]}")
        data = response.json()
        self.say(f"order {merchant_order_no}: {_money(amount, 'CNY')} created, status {data['status']}")
        return DemoOrder(merchant_order_no, amount, data["currency"], data["out_trade_no"], data["pay_url"], data["status"])

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
            raise CommandError(f"paying {order.merchant_order_no} at the bank simulator failed ({response.status_code}): "
                               f"{response.text[:500]}")
        order.bank_trade_no = data["bank_trade_no"]
        self.say(f"order {order.merchant_order_no}: paid at the bank, bank_trade_no {order.bank_trade_no}")

    def wait(self, base: str, orders: list[DemoOrder], timeout: float) -> None:
        self.stdout.write(f"  waiting up to {timeout:.0f} s for the bank notifies, the orders and their vouchers ", ending="")
        deadline = time.monotonic() + timeout
        while True:
            for order in orders:
                if order.status not in FINAL_STATUSES:
                    response = self.request("GET", f"{base}/api/v1/orders/{order.merchant_order_no}")
                    if response.status_code == 200:
                        order.status = response.json()["status"]
                order.notify_stored = BankNotify.objects.filter(out_trade_no=order.out_trade_no).exists()
                voucher = Voucher.objects.filter(source=f"order.paid:{order.out_trade_no}").first()
                order.voucher = f"#{voucher.pk}" if voucher else ""
            if all(o.settled or o.status in FINAL_STATUSES - {"SUCCESS"} for o in orders) or time.monotonic() > deadline:
                break
            self.stdout.write(".", ending="")
            self.stdout.flush()
            time.sleep(0.5)
        self.stdout.write(" done")

    def print_table(self, orders: list[DemoOrder]) -> None:
        header = ("merchant_order_no", "amount", "status", "bank notify stored?", "voucher")
        rows = [(o.merchant_order_no, _money(o.amount, o.currency), o.status, "yes" if o.notify_stored else "NO",
                 o.voucher or "none yet") for o in orders]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        line = "  ".join("{:<%d}" % w for w in widths)
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(line.format(*header).rstrip()))
        for row in rows:
            self.stdout.write(line.format(*row).rstrip())
        self.stdout.write("")

    def conclude(self, orders: list[DemoOrder], timeout: float) -> None:
        if all(o.settled for o in orders):
            self.stdout.write(self.style.SUCCESS("every order is paid (SUCCESS) and booked (one voucher each)"))
            return
        unbooked = [o.merchant_order_no for o in orders if o.status == "SUCCESS" and not o.voucher]
        if unbooked and len(unbooked) == sum(o.status == "SUCCESS" for o in orders) == len(orders):
            raise CommandError(
                f"paid but not booked after {timeout:.0f} s: {', '.join(unbooked)}. Is the accounting worker running "
                "(`make worker QUEUE=accounting`)? Its order.paid messages wait in the outbox and are delivered "
                "once it runs (see /admin/messaging/message/?service=orders)."
            )
        missing = [o.merchant_order_no for o in orders if not o.notify_stored and o.status != "SUCCESS"]
        if missing:
            raise CommandError(
                f"no bank notify was stored for {', '.join(missing)}. The bank simulator sends it from the "
                "sandbox worker to PUBLIC_BASE_URL/gateway/bank/notify: is the sandbox worker running "
                "(`make worker QUEUE=sandbox`, or the whole stack with `make run`) and does PUBLIC_BASE_URL "
                "point at this server? Then run `make demo` again."
            )
        bad = [f"{o.merchant_order_no} ({o.status})" for o in orders if o.status in {"CLOSED", "FAILED"}]
        if bad:
            raise CommandError(f"orders ended without being paid: {', '.join(bad)}. See them in admin (/admin/orders/order/).")
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

    # --- helpers -----------------------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            return self.http.request(method, url, timeout=10, **kwargs)
        except requests.RequestException as exc:
            raise CommandError(f"{method} {url} failed: {exc}. Is the server still running?") from exc

    def say(self, text: str) -> None:
        self.stdout.write(f"  {text}")
