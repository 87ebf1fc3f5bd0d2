"""The course's fault scenarios, run for real against a running stack (``manage.py scenario``).

Each scenario pays orders (at the bank and from a wallet) before a fault, injects the fault for
real through the stack's control socket (a worker stopped, a database cut, the broker emptied,
the merchant's server failing, the bank misbehaving), pays more during it, removes it, then waits
until every payment is paid, credited, booked and notified once and ``reconcile`` finds the stack
consistent and settled. What each pattern did is read back from the TCC, messaging, bank-notify and
notification tables. A scenario's merchant and payer are its own, so the merchant's balance must
equal exactly what its paid orders are worth.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError, connections
from django.db.models import Count, Max

from accounting.models import Voucher
from accounts.models import FundEntry
from accounts.selectors import fund_account_get
from accounts.services import wallet_credit
from notifications.models import Notification
from orders.models import Order, PaymentRecord, Refund
from paysys.core.management.commands.stack import stack_request
from paysys.core.money import fee_for
from paysys.core.services import merchant_create, payer_create_with_agreement
from paysys.messaging.models import Message
from paysys.reconcile.checks import reconcile
from paysys.sandbox.models import BankNotifyAttempt, BankPayment
from paysys.tcc.models import GlobalTransaction

# the schedules of a stack the scenarios start themselves: seconds instead of minutes, so a fault
# and its recovery fit in a few seconds (printed as such; ``make run`` keeps the real ones)
COMPRESSED_SCHEDULES = {
    "MESSAGE_RESEND_SCHEDULE": "0,1,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2",
    "TCC_RETRY_SCHEDULE": "1,1,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2",
    "ORDER_POLL_SCHEDULE": "1,1,2,2,3",
    "ORDER_POLL_LATE_INTERVAL": "5",
    "NOTIFY_RETRY_SCHEDULE": "1,1,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2",
}
# the processes of each service: "a service is down" stops all of them and cuts its database
SERVICE_PROCESSES = {
    "orders": ["orders", "polling"],
    "funds": ["funds"],
    "points": ["points"],
    "accounting": ["accounting"],
}
# what the chaos run may SIGKILL: every worker and beat (the web and the simulators stay up)
CHAOS_VICTIMS = [
    "core",
    "orders",
    "polling",
    "funds",
    "points",
    "accounting",
    "notifications",
    "notify-delivery",
    "beat",
    "check-back",
]
CURRENCY = "CNY"


def _n(count: int, thing: str) -> str:
    return f"{count} {thing}" + ("" if count == 1 else "s")


NOTE_EVERY = 30  # seconds between the lines a long convergence wait prints
FRESH_HINT = "run the scenarios on a fresh var/ or database: what is stuck from before counts"


@dataclass
class Payment:
    merchant_order_no: str
    amount: int
    method: str  # "bank" or "balance"
    out_trade_no: str = ""
    pay_url: str = ""
    bank_trade_no: str = ""
    bank_options: dict = field(default_factory=dict)
    declined: int = 0  # balance payments refused while a service was down (the payer tries again)
    paid: bool = False  # the bank took it, or the wallet payment was accepted

    @property
    def business_key(self) -> str:
        return (
            f"bank:{self.bank_trade_no}"
            if self.method == "bank"
            else f"balance:{self.out_trade_no}"
        )


@dataclass
class Row:
    scenario: str
    payments: int = 0
    completed: int = 0
    lost: int = 0
    doubled: int = 0
    converge_seconds: float | None = None
    reconcile: str = "not run"
    pattern: str = ""
    balance_exact: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.payments > 0
            and self.completed == self.payments
            and not self.lost
            and not self.doubled
            and self.balance_exact
            and self.reconcile == "clean"
        )


class Client:
    """What a scenario needs of the running stack: HTTP (merchant API, simulators) and its controls."""

    def __init__(self, *, base: str, request: Callable, sandbox_headers: dict):
        self.base = base
        self.request = request
        self.api: dict = {}  # the merchant's API key: each scenario sets up a merchant of its own
        self.sandbox = sandbox_headers

    def control(self, op: str, name: str | None = None) -> str:
        return stack_request(op, name).get("message", "")


class Scenario:
    """One scenario: its payments, and the fault it injects (``inject``) and removes (``remove``)."""

    name = ""
    title = ""
    bank_before, balance_before, bank_during, balance_during = 2, 1, 2, 1

    def __init__(self, client: Client, stamp: str, say: Callable[[str], None]):
        self.c = client
        self.stamp = stamp
        self.say = say
        self.payments: list[Payment] = []

    # --- the fault (overridden) ----------------------------------------------------------------

    def inject(self) -> None:
        pass

    def remove(self) -> None:
        pass

    def bank_options(self, index: int) -> dict:
        return {}

    def settled_extra(self) -> bool:
        """Anything else the scenario waits for before it counts as converged."""
        return True

    # --- the run -------------------------------------------------------------------------------

    def run(self, timeout: float) -> Row:
        row = Row(self.title)
        try:
            self.set_up()
            before = self.orders("before", self.bank_before, self.balance_before)
            during = self.orders("during", self.bank_during, self.balance_during)
            self.pay_all(before)
            try:  # removing a fault is idempotent: a half-injected one is removed too
                self.inject()
                self.pay_all(during)
            finally:
                self.remove()
            removed_at = time.monotonic()
            self.pay_all(
                [p for p in self.payments if not p.paid]
            )  # what was declined during the fault
            row.converge_seconds = self.converge(removed_at, timeout)
        except Exception as exc:  # noqa: BLE001 (a scenario that breaks is a row that says why)
            row.error = f"{type(exc).__name__}: {exc}"[:300]
        self.measure(row)
        return row

    def set_up(self) -> None:
        """A merchant and a payer of the scenario's own, the payer's wallet credited, and the merchant's
        server (the sandbox's merchant simulator) holding the webhook secret."""
        merchant, api_key = merchant_create(
            name=f"scenario {self.name} {self.stamp}",
            notify_url=f"{self.c.base}/sandbox/merchant/notify",
        )
        self.merchant = merchant
        self.c.api = {"Authorization": f"Bearer {api_key}"}
        payer, _, self.payer_token = payer_create_with_agreement(
            name=f"scenario payer {self.stamp}",
            merchant_id=merchant.pk,
            issued_by="command:scenario",
        )
        self.payer = payer
        wallet_credit(
            payer_id=payer.pk,
            amount=10_000_000,
            reason=f"scenario {self.name}",
            credited_by="command:scenario",
        )
        self.http(
            "POST",
            f"/sandbox/merchant/{merchant.pk}",
            json={"webhook_secret": merchant.webhook_secret},
            headers=self.c.sandbox,
            expect=(200, 201),
        )

    def orders(self, phase: str, bank: int, balance: int) -> list[Payment]:
        """Created before any fault: creating an order needs the orders service."""
        made = []
        for i, method in enumerate(["bank"] * bank + ["balance"] * balance):
            payment = Payment(
                f"sc-{self.name}-{self.stamp}-{phase}-{i}", 1000 + 137 * len(self.payments), method
            )
            data = self.http(
                "POST",
                "/api/v1/orders",
                headers=self.c.api,
                expect=(201,),
                json={
                    "merchant_order_no": payment.merchant_order_no,
                    "amount": payment.amount,
                    "currency": CURRENCY,
                    "subject": f"scenario {self.name}",
                    "payer_id": self.payer.pk,
                },
            )
            payment.out_trade_no, payment.pay_url = data["out_trade_no"], data["pay_url"]
            if method == "bank":
                payment.bank_options = self.bank_options(
                    sum(p.method == "bank" for p in self.payments)
                )
            self.payments.append(payment)
            made.append(payment)
        return made

    def pay_all(self, payments: list[Payment]) -> None:
        for payment in payments:
            if payment.method == "bank":
                data = self.http(
                    "POST",
                    payment.pay_url,
                    json=payment.bank_options,
                    headers=self.c.sandbox,
                    expect=(200,),
                )
                payment.bank_trade_no, payment.paid = data["bank_trade_no"], True
                continue
            try:
                response = self.c.request(
                    "POST",
                    f"{self.c.base}/api/v1/orders/{payment.merchant_order_no}/pay",
                    json={"method": "balance", "payer_token": self.payer_token},
                    headers=self.c.api,
                )
            except CommandError:  # no answer in time (a database that hangs): as good as refused
                response = None
            if response is not None and response.status_code == 200:
                payment.paid = True
            else:  # a service is down: the payment is refused whole, and the payer tries again later (a
                payment.declined += 1  # replay of a call that did pay answers 200 with the order)

    def http(self, method: str, path: str, *, expect: tuple, **kwargs) -> dict:
        url = path if path.startswith("http") else f"{self.c.base}{path}"
        response = self.c.request(method, url, **kwargs)
        if response.status_code not in expect:
            raise RuntimeError(
                f"{method} {url} answered {response.status_code}: {response.text[:200]}"
            )
        return response.json()

    # --- convergence and what happened ---------------------------------------------------------

    def converge(self, since: float, timeout: float) -> float:
        deadline, next_note = since + timeout, time.monotonic() + NOTE_EVERY
        while True:
            unpaid = [p for p in self.payments if not p.paid]
            if unpaid and time.monotonic() < deadline:
                time.sleep(1)
                self.pay_all(unpaid)  # still refused: a payer would try again a little later
                continue
            waiting = ""
            try:
                if unpaid:
                    waiting = f"{len(unpaid)} payment(s) not paid"
                elif not self.all_completed() or not self.settled_extra():
                    waiting = "this scenario's payments not all completed (credit, points, voucher, notification)"
                else:
                    report = reconcile(grace=60)
                    # reconcile judges the whole platform: anything stuck from before counts too
                    waiting = (
                        ""
                        if report.settled
                        else "reconcile --strict not clean: "
                        + ", ".join(
                            [
                                f"{name}: {n}"
                                for name, n in (+report.in_flight + +report.stuck).items()
                            ]
                            + [f"{check}: {len(found)}" for check, found in report.problems.items()]
                        )
                    )
            except DatabaseError as exc:
                waiting = f"a database did not answer ({exc})"
                connections.close_all()
            if not waiting:
                return time.monotonic() - since
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not converged {timeout:.0f} s after the fault was removed: {waiting} "
                    f"({FRESH_HINT})"
                )
            if time.monotonic() >= next_note:  # a long wait says what it waits for, as it goes
                next_note += NOTE_EVERY
                self.say(
                    f"  still waiting, {time.monotonic() - since:.0f} s of {timeout:.0f}: {waiting}"
                    + (f" ({FRESH_HINT})" if waiting.startswith("reconcile") else "")
                )
            time.sleep(0.5)

    def completions(self) -> dict[str, dict]:
        """Per out_trade_no: status, vouchers, posted merchant credits, notification delivered, confirms."""
        otns = [p.out_trade_no for p in self.payments]
        status = dict(
            Order.objects.filter(out_trade_no__in=otns).values_list("out_trade_no", "status")
        )
        vouchers = dict(
            Voucher.objects.filter(source__in=[f"order.paid:{o}" for o in otns])
            .values("source")
            .annotate(n=Count("id"))
            .values_list("source", "n")
        )
        account = fund_account_get(
            owner_type="merchant", owner_id=self.merchant.pk, currency=CURRENCY
        )
        credits = (
            dict(
                FundEntry.objects.filter(
                    account=account, kind="posted", direction="credit", out_trade_no__in=otns
                )
                .values("out_trade_no")
                .annotate(n=Count("id"))
                .values_list("out_trade_no", "n")
            )
            if account
            else {}
        )
        notified = set(
            Notification.objects.filter(out_trade_no__in=otns, status="SUCCEEDED").values_list(
                "out_trade_no", flat=True
            )
        )
        confirmed = dict(
            GlobalTransaction.objects.filter(
                business_key__in=[p.business_key for p in self.payments], status="CONFIRMED"
            )
            .values("business_key")
            .annotate(n=Count("id"))
            .values_list("business_key", "n")
        )
        return {
            p.out_trade_no: {
                "status": status.get(p.out_trade_no),
                "vouchers": vouchers.get(f"order.paid:{p.out_trade_no}", 0),
                "credits": credits.get(p.out_trade_no, 0),
                "notified": p.out_trade_no in notified,
                "confirmed": confirmed.get(p.business_key, 0),
            }
            for p in self.payments
        }

    @staticmethod
    def completed(state: dict) -> bool:
        return (
            state["status"] in Order.PAID_STATUSES
            and state["vouchers"] >= 1
            and state["credits"] >= 1
            and state["notified"]
            and state["confirmed"] >= 1
        )

    def all_completed(self) -> bool:
        return all(self.completed(s) for s in self.completions().values()) and self.balance_exact()

    def balance_exact(self) -> bool:
        account = fund_account_get(
            owner_type="merchant", owner_id=self.merchant.pk, currency=CURRENCY
        )
        want = self.merchant_balance()
        return account is not None and (account.balance, account.frozen, account.pending_in) == (
            want,
            0,
            0,
        )

    def merchant_balance(self) -> int:
        """What the merchant's balance must be once everything settled: each payment less its fee."""
        return sum(p.amount - fee_for(p.amount, self.merchant.fee_rate_bp) for p in self.payments)

    def measure(self, row: Row) -> None:
        try:
            states = self.completions()
            row.payments = len(self.payments)
            row.completed = sum(self.completed(s) for s in states.values())
            row.lost = row.payments - row.completed
            row.doubled = sum(
                max(s["vouchers"], s["credits"], s["confirmed"]) > 1 for s in states.values()
            )
            row.balance_exact = self.balance_exact()
            report = reconcile(grace=60)
            row.reconcile = (
                "clean"
                if report.settled
                else "INCONSISTENT"
                if not report.consistent
                else "not settled"
            )
            row.pattern = self.pattern()
        except DatabaseError as exc:
            row.error = row.error or f"reading the outcome failed: {exc}"[:300]

    def pattern(self) -> str:
        """What the patterns did for this scenario's payments, read from their tables."""
        keys = [p.business_key for p in self.payments]
        otns = [p.out_trade_no for p in self.payments]
        tcc = GlobalTransaction.objects.filter(business_key__in=keys)
        cancelled = tcc.filter(status="CANCELLED").count()
        top = tcc.filter(status="CONFIRMED").aggregate(m=Max("attempt"))["m"] or 0
        tries = "try" if cancelled == 1 else "tries"
        parts = [
            f"{cancelled} {tries} cancelled, attempt {top} confirmed"
            if cancelled
            else f"{tcc.count()} TCC confirmed at attempt 1"
        ]
        declined = sum(p.declined for p in self.payments)
        if declined:
            parts.append(f"{_n(declined, 'wallet payment')} refused or unanswered, paid on retry")
        resends = sum(
            max(0, n - 1)
            for alias in settings.DATABASES
            for n in Message.objects.using(alias)
            .filter(business_key__in=otns)
            .values_list("send_count", flat=True)
        )
        if resends:
            parts.append(f"{_n(resends, 'message resend')} from the outbox")
        retried = Notification.objects.filter(out_trade_no__in=otns, attempt_count__gt=1)
        if retried.exists():
            parts.append(
                f"{_n(retried.count(), 'notification')} retried "
                f"({sum(retried.values_list('attempt_count', flat=True))} attempts)"
            )
        polled = PaymentRecord.objects.filter(out_trade_no__in=otns, source="poll").count()
        if polled:
            parts.append(f"{_n(polled, 'payment')} found by polling")
        duplicates = BankNotifyAttempt.objects.filter(
            payment__out_trade_no__in=otns, duplicate=True
        ).count()
        if duplicates:
            parts.append(
                f"{duplicates} duplicate bank {'notify' if duplicates == 1 else 'notifies'} absorbed"
            )
        return "; ".join(parts)


# --- the nine ----------------------------------------------------------------------------------


class HappyPath(Scenario):
    name, title = "happy", "1 happy path"


class ServiceDown(Scenario):
    """The course's "service down": every worker of the service stopped and its database cut, while
    everything else runs; then both back."""

    service = ""
    down_seconds = 4  # after the payments during the fault: the others' tries meet the dead service

    def inject(self) -> None:
        for process in SERVICE_PROCESSES[self.service]:
            self.say(self.c.control("stop", process))
        self.say(self.c.control("cut", self.service))

    def remove(self) -> None:
        time.sleep(self.down_seconds)
        self.say(self.c.control("restore", self.service))
        for process in SERVICE_PROCESSES[self.service]:
            self.say(self.c.control("start", process))


class OrdersDown(ServiceDown):
    name, title, service = "orders-down", "2 orders service down", "orders"


class FundsDown(ServiceDown):
    name, title, service = "funds-down", "3 fund-account service down", "funds"


class PointsDown(ServiceDown):
    name, title, service = "points-down", "4 points-account service down", "points"


class AccountingDown(ServiceDown):
    name, title, service = "accounting-down", "5 accounting service down", "accounting"


class MerchantDown(Scenario):
    """The merchant's server answers 503 to every notification, then comes back."""

    name, title = "merchant-down", "6 merchant server down, then back"

    def inject(self) -> None:
        self.http(
            "POST",
            f"/sandbox/merchant/{self.merchant.pk}",
            json={"fail_next": 10_000, "fail_status": 503},
            headers=self.c.sandbox,
            expect=(200,),
        )
        self.say("merchant server: answers 503 to every notification")
        time.sleep(3)  # the first attempts fail

    def remove(self) -> None:
        self.http(
            "POST",
            f"/sandbox/merchant/{self.merchant.pk}",
            json={"fail_next": 0},
            headers=self.c.sandbox,
            expect=(200,),
        )
        self.say("merchant server: back")


class BrokerLost(Scenario):
    """The broker loses what it holds: bank payments wait in it (the consuming workers stopped),
    then it is emptied (the stack's own Redis database flushed, or the embedded broker's folder),
    and every worker reconnects. Only the outbox still knows; recovery resends from it."""

    name, title = "broker-lost", "7 broker loses its messages"
    consumers = ["core", "accounting", "notifications"]

    def inject(self) -> None:
        for process in self.consumers:
            self.say(self.c.control("stop", process))

    def remove(self) -> None:
        deadline = (
            time.monotonic() + 20
        )  # the bank's notifies stored, their messages waiting in the broker
        during = [p.out_trade_no for p in self.payments if p.bank_trade_no][-self.bank_during :]
        while time.monotonic() < deadline and Message.objects.using("default").filter(
            business_key__in=during
        ).count() < len(during):
            time.sleep(0.2)
        self.say(f"broker: {empty_broker()}")
        for process in self.consumers:
            self.say(self.c.control("start", process))
        for process in set(CHAOS_VICTIMS) - set(
            self.consumers
        ):  # a restarted broker: everyone reconnects
            self.c.control("kill", process)


def empty_broker() -> str:
    if settings.CELERY_BROKER_URL.startswith("redis"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        try:
            keys = client.dbsize()
            client.flushdb()  # this stack's own database only
        finally:
            client.close()
        return f"Redis database flushed ({keys} keys)"
    if settings.CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        from paysys.celery import app

        return f"RabbitMQ queues purged ({app.control.purge()} messages)"
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    files = list(folder.glob("*")) if folder.exists() else []
    for path in files:
        path.unlink(missing_ok=True)
    claimed = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("claimed_folder", folder))
    if claimed.exists() and claimed != folder:
        shutil.rmtree(claimed, ignore_errors=True)
        claimed.mkdir(parents=True, exist_ok=True)
    return f"folder {folder} emptied ({len(files)} messages)"


class BankMisbehaves(Scenario):
    """The bank notifies twice and more, late, in reverse order, or not at all: its notifies are
    held and released only after polling has found the payments."""

    name, title = "bank-chaos", "8 bank notifies duplicated, delayed, reordered, lost"
    bank_before, balance_before, bank_during, balance_during = 1, 1, 5, 0
    OPTIONS = [{"duplicates": 3}, {"delay": 4}, {"hold": True}, {"hold": True}, {"hold": True}]

    def bank_options(self, index: int) -> dict:
        return self.OPTIONS[index - self.bank_before] if index >= self.bank_before else {}

    def remove(self) -> None:
        held = [p.out_trade_no for p in self.payments if p.bank_options.get("hold")]
        deadline = (
            time.monotonic() + 30
        )  # lost, as far as the platform knows: polling must find them
        while time.monotonic() < deadline and Order.objects.filter(
            out_trade_no__in=held, status="SUCCESS"
        ).count() < len(held):
            time.sleep(0.5)
        data = self.http(
            "POST", "/sandbox/bank/release", json={}, headers=self.c.sandbox, expect=(200,)
        )
        self.say(f"bank: {data['released']} held notifies released late, latest payment first")

    def settled_extra(self) -> bool:
        otns = [p.out_trade_no for p in self.payments if p.method == "bank"]
        return (
            not BankPayment.objects.filter(out_trade_no__in=otns)
            .exclude(notify_state="ACKED")
            .exists()
        )


@dataclass
class PlannedRefund:
    payment: Payment
    merchant_refund_no: str
    amount: int
    refund_no: str = ""  # once the API accepted it (201 or a 200 replay)


class RefundsFundsDown(ServiceDown):
    """Refunds, whole and partial, of paid orders (bank and wallet) asked while the fund-account
    service is cut: each refund's try meets the dead service and is cancelled (503, nothing
    refunded), and the merchant asks again once it is back; bank refunds then wait for the bank's
    answer. Converged: every refund SUCCEEDED once, the merchant's balance exact (the fee kept)."""

    name, title, service = "refund", "9 refunds while the fund-account service is down", "funds"
    bank_before, balance_before = 2, 2

    def run(self, timeout: float) -> Row:
        row = Row(self.title)
        self.refunds: list[PlannedRefund] = []
        self.refused = 0
        try:
            self.set_up()
            self.pay_all(self.orders("before", self.bank_before, self.balance_before))
            self.converge(time.monotonic(), timeout)  # only a paid order is refunded
            self.refunds = [
                PlannedRefund(
                    p, f"{p.merchant_order_no}-r", p.amount // 2 if i % 2 == 0 else p.amount
                )
                for i, p in enumerate(self.payments[:3])
            ]  # half, whole, half; the fourth kept
            try:
                self.inject()
                self.refund_all()
            finally:
                self.remove()
            row.converge_seconds = self.converge(time.monotonic(), timeout)
        except Exception as exc:  # noqa: BLE001 (a scenario that breaks is a row that says why)
            row.error = f"{type(exc).__name__}: {exc}"[:300]
        self.measure(row)
        return row

    def refund_all(self) -> None:
        for refund in [r for r in self.refunds if not r.refund_no]:
            try:
                response = self.c.request(
                    "POST",
                    f"{self.c.base}/api/v1/orders/{refund.payment.merchant_order_no}/refunds",
                    headers=self.c.api,
                    json={
                        "merchant_refund_no": refund.merchant_refund_no,
                        "amount": refund.amount,
                        "reason": "scenario",
                    },
                )
            except CommandError:  # no answer in time: as good as refused
                response = None
            if response is not None and response.status_code in (200, 201):
                refund.refund_no = response.json()["refund_no"]
            elif response is None or response.status_code == 503:
                self.refused += 1  # nothing was refunded: the merchant asks again later
            else:
                raise RuntimeError(
                    f"refund {refund.merchant_refund_no} answered {response.status_code}: {response.text[:200]}"
                )

    def all_completed(self) -> bool:
        self.refund_all()  # those refused while funds was down
        return super().all_completed() and len(self.succeeded()) == len(self.refunds)

    def succeeded(self) -> list[str]:
        return list(
            Refund.objects.filter(
                refund_no__in=[r.refund_no for r in self.refunds if r.refund_no],
                status=Refund.Status.SUCCEEDED,
            ).values_list("refund_no", flat=True)
        )

    def merchant_balance(self) -> int:
        return super().merchant_balance() - sum(r.amount for r in self.refunds)  # the fee is kept

    def measure(self, row: Row) -> None:
        super().measure(row)
        try:
            per_order = Counter(
                Refund.objects.filter(
                    out_trade_no__in=[r.payment.out_trade_no for r in self.refunds]
                ).values_list("out_trade_no", flat=True)
            )
            succeeded = len(self.succeeded())
        except DatabaseError as exc:
            row.error = row.error or f"reading the refunds failed: {exc}"[:300]
            return
        row.lost += len(self.refunds) - succeeded
        row.doubled += sum(n > 1 for n in per_order.values())
        whole = sum(r.amount == r.payment.amount for r in self.refunds)
        row.pattern = (
            f"{succeeded} of {_n(len(self.refunds), 'refund')} SUCCEEDED ({whole} whole, "
            f"{len(self.refunds) - whole} partial), {_n(self.refused, 'refund request')} refused while "
            f"funds was down and asked again; " + row.pattern
        )


SCENARIOS = [
    HappyPath,
    OrdersDown,
    FundsDown,
    PointsDown,
    AccountingDown,
    MerchantDown,
    BrokerLost,
    BankMisbehaves,
    RefundsFundsDown,
]


class Chaos(Scenario):
    """``--chaos``: many payments while random workers and beat are SIGKILLed (the stack restarts
    them); reconcile is the oracle and the merchant's balance must be exact."""

    name = "chaos"

    def __init__(
        self, client: Client, stamp: str, say: Callable[[str], None], *, seed: int, payments: int
    ):
        super().__init__(client, stamp, say)
        self.seed, self.count = seed, payments
        self.title = f"chaos seed {seed}"
        self.kills: list[str] = []

    def run(self, timeout: float) -> Row:
        row = Row(self.title)
        rng = random.Random(self.seed)
        stop = threading.Event()

        def killer() -> None:
            while not stop.wait(rng.uniform(0.5, 2.5)):
                victim = rng.choice(CHAOS_VICTIMS)
                try:
                    self.c.control("kill", victim)
                    self.kills.append(victim)
                except Exception:  # noqa: BLE001 (a refused kill is no kill)
                    pass

        try:
            self.set_up()
            balance = self.count // 5
            batch = self.orders("chaos", self.count - balance, balance)
            rng.shuffle(batch)
            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            try:
                self.pay_all(batch)
            finally:
                stop.set()
                thread.join()
            self.say(f"chaos: {len(self.kills)} SIGKILLs ({', '.join(sorted(set(self.kills)))})")
            row.converge_seconds = self.converge(time.monotonic(), timeout)
        except Exception as exc:  # noqa: BLE001
            row.error = f"{type(exc).__name__}: {exc}"[:300]
        self.measure(row)
        row.pattern = f"{len(self.kills)} SIGKILLs; " + row.pattern
        return row
