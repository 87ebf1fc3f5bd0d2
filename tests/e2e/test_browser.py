"""End to end in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium against a real stack (``runstack``: web, workers, beat) in this run's mode,
on the full stack its MariaDB test schemas and a Redis database of its own.

* a payer opens a pay URL and clicks Pay, and the order becomes SUCCESS;
* the accounting worker is down, so the order's ``order.paid`` message goes DEAD; once the worker
  is back, an operator logs into admin, finds the DEAD message, resends it, and it is consumed;
* ``/api/docs/`` renders the operations with no internet (every host but 127.0.0.1 unresolvable).

Each step leaves a screenshot in ``var/e2e-screenshots/<mode>/`` (kept by CI as artifacts). Without
Chromium the tests are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.management import call_command

from tests.core.test_runstack import alive, embedded_env

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = (
    Path(settings.VAR_DIR) / "e2e-screenshots"
)  # then a folder per mode: full-stack/, embedded/
ADMIN_USER, ADMIN_PASSWORD = "operator", "e2e-operator-pw-7431"
E2E_REDIS_DB = int(os.environ.get("PAYSYS_FAULT_REDIS_DB", "9"))  # the fault tests' own database
WAIT = 90  # seconds for anything asynchronous (a loaded 2-core CI machine)

# the stack's processes write the test databases (full stack); this process never does, but the
# marker makes pytest-django create them even when these are the only tests run
pytestmark = [pytest.mark.browser, pytest.mark.django_db(databases="__all__")]


def full_stack() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith(
        "mysql"
    ) and settings.CELERY_BROKER_URL.startswith("redis")


def free_port() -> int:
    if os.environ.get("PAYSYS_E2E_PORT"):  # a shared machine's allotted port
        return int(os.environ["PAYSYS_E2E_PORT"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = WAIT, interval: float = 0.5):
    """Poll ``predicate`` until it is truthy. An element that went stale while it was read (the
    page was being replaced, e.g. after a redirect) counts as "not yet"."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (StaleElementReferenceException, NoSuchElementException):  # a page still loading
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class LiveStack:
    base: str
    env: dict
    log: Path
    api_key: str
    payer_id: int
    processes: list[subprocess.Popen]

    def api(self) -> requests.Session:
        http = requests.Session()
        http.trust_env = False  # loopback: no proxy
        http.headers["Authorization"] = f"Bearer {self.api_key}"
        return http

    def create_order(self, merchant_order_no: str, amount: int = 1999) -> dict:
        response = self.api().post(
            f"{self.base}/api/v1/orders",
            json={
                "merchant_order_no": merchant_order_no,
                "amount": amount,
                "currency": "CNY",
                "subject": "Green tea",
                "payer_id": self.payer_id,
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def order_status(self, merchant_order_no: str) -> str:
        return (
            self.api()
            .get(f"{self.base}/api/v1/orders/{merchant_order_no}", timeout=10)
            .json()["status"]
        )

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.log.with_name(f"{name}.log"), "ab") as out:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory, django_db_setup, django_db_blocker):
    """Every process of the stack but the accounting worker (started later by the test that needs it)."""
    if not (CHROMIUM and CHROMEDRIVER):
        reason = (
            "browser tests need Chromium: apt-get install chromium chromium-driver (.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("e2e")
    logs = (
        Path(settings.VAR_DIR) / "e2e-logs" / ("full-stack" if full_stack() else "embedded")
    )  # CI artifacts too
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    common = {
        "PORT": str(port),
        "PUBLIC_BASE_URL": base,
        "PYTHONUNBUFFERED": "1",
        "MESSAGE_RESEND_SCHEDULE": "0,1,1",
    }  # a message no worker takes is DEAD within seconds
    redis_client = None
    if full_stack():
        import redis

        from tests.faults.harness import service_env, with_redis_db

        broker = with_redis_db(settings.CELERY_BROKER_URL, E2E_REDIS_DB)
        redis_client = redis.Redis.from_url(broker)
        redis_client.flushdb()
        env = service_env(broker, PAYSYS_VAR_DIR=str(tmp / "var"), **common)  # the test schemas
        with (
            django_db_blocker.unblock()
        ):  # committed: an earlier test's flush may have emptied the chart
            from accounting.services import chart_of_accounts_seed

            chart_of_accounts_seed()
    else:
        env = embedded_env(tmp / "var", **common)
        manage(env, "migrate_all")
    manage(
        {**env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        "createsuperuser",
        "--noinput",
        "--username",
        ADMIN_USER,
        "--email",
        "operator@example.com",
    )
    merchant = json.loads(
        manage(
            env,
            "create_merchant",
            "--name",
            "E2E Shop",
            "--notify-url",
            "https://shop.example/n",
            "--json",
        )
    )
    payer = json.loads(
        manage(
            env,
            "create_payer",
            "--name",
            "E2E Payer",
            "--merchant",
            str(merchant["merchant_id"]),
            "--json",
        )
    )

    names = [n for n in ("web", *settings.SERVICE_QUEUES, "beat") if n != "accounting"]
    live = LiveStack(base, env, logs / "runstack.log", merchant["api_key"], payer["payer_id"], [])
    runstack = live.start("runstack", "manage.py", "runstack", "--no-banner", *names)

    def up():
        assert runstack.poll() is None, f"runstack exited:\n{live.log_tail()}"
        try:
            healthy = requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False
        return (
            healthy
            and len(re.findall(r"@\S+ ready\.", live.log.read_text(errors="replace")))
            >= len(names) - 2
        )

    wait_until(up, "the stack to answer /healthz with its workers ready")
    yield live
    for process in live.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in live.processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    for pid in map(int, re.findall(r"started \(pid=(\d+)\)", live.log.read_text(errors="replace"))):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if redis_client is not None:
        redis_client.flushdb()
        with django_db_blocker.unblock():  # what the stack wrote to the test schemas
            for alias in settings.DATABASES:
                call_command("flush", database=alias, interactive=False, verbosity=0)


@pytest.fixture
def browser(stack, request):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--disable-sync",
        "--disable-default-apps",
        "--window-size=1280,1000",
        # offline: every host but this machine is unresolvable
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    folder = SCREENSHOTS / ("full-stack" if full_stack() else "embedded")
    folder.mkdir(parents=True, exist_ok=True)
    steps = iter(range(1, 100))

    def shot(step: str) -> None:
        driver.save_screenshot(str(folder / f"{request.node.name}-{next(steps):02d}-{step}.png"))

    driver.shot = shot
    yield driver
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        shot("failed")  # the page the test failed on
    driver.quit()


def text_of(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def log_in(stack, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.base}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys(ADMIN_USER)
    browser.find_element(By.ID, "id_password").send_keys(ADMIN_PASSWORD)
    browser.shot("login")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: "Site administration" in text_of(browser), "the admin index")
    browser.shot("admin-index")


def test_a_payer_clicks_pay_and_the_order_becomes_success(stack, browser):
    from selenium.webdriver.common.by import By

    # given: a merchant's order and its pay URL
    order = stack.create_order("e2e-pay-1")
    browser.get(order["pay_url"])
    assert "19.99 CNY" in text_of(browser)
    browser.shot("pay-page")

    # when: the payer clicks Pay
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_until(lambda: browser.find_elements(By.ID, "paid"), "the paid page")
    browser.shot("paid")

    # then: the bank notifies, the order is completed
    wait_until(
        lambda: stack.order_status("e2e-pay-1") == "SUCCESS", f"order SUCCESS\n{stack.log_tail()}"
    )

    # and: the pay page now says so, with no button
    browser.get(order["pay_url"])
    assert browser.find_elements(By.ID, "already-paid") and not browser.find_elements(
        By.TAG_NAME, "form"
    )
    browser.shot("already-paid")


def test_an_operator_resends_a_dead_message_from_admin_and_it_is_consumed(stack, browser):
    from selenium.webdriver.common.by import By

    # given: a paid order whose order.paid message went DEAD while the accounting worker was down
    order = stack.create_order("e2e-dead-1", amount=4500)
    assert requests.post(order["pay_url"], json={}, timeout=10).status_code == 200
    wait_until(lambda: stack.order_status("e2e-dead-1") == "SUCCESS", "order SUCCESS")

    log_in(stack, browser)

    dead_list = f"{stack.base}/admin/messaging/message/?service=orders&dead=yes&topic=order.paid&queue=accounting"

    def this_orders_dead_message() -> str | None:
        browser.get(dead_list)
        links = [
            a.get_attribute("href")
            for a in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr th a")
        ]
        for href in links:  # another test's order may have a DEAD message too: the payload tells
            browser.get(href)
            if order["out_trade_no"] in text_of(browser):
                browser.get(dead_list)
                return href
        return None

    detail = wait_until(
        this_orders_dead_message, "the order's order.paid message to go DEAD", interval=2
    )
    browser.shot("dead-messages")

    # and: the accounting worker is back (its queue emptied of the sends that went unanswered)
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "paysys", "purge", "-f", "-Q", "accounting"],
        cwd=settings.BASE_DIR,
        env=stack.env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    worker = stack.start(
        "accounting",
        "-m",
        "celery",
        "-A",
        "paysys",
        "worker",
        "-Q",
        "accounting",
        "-n",
        f"e2e-accounting-{os.getpid()}@%h",
        "--concurrency=1",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
    )
    wait_until(
        lambda: b" ready." in stack.log.with_name("accounting.log").read_bytes(),
        "the accounting worker",
    )
    assert worker.poll() is None

    # when: the operator opens the message and clicks Resend
    browser.get(detail)
    wait_until(
        lambda: browser.find_elements(By.ID, "resend-form"),
        "the message page with its Resend button",
    )
    assert "Dead" in browser.find_element(By.CSS_SELECTOR, ".field-status").text
    browser.shot("message-detail")
    browser.find_element(By.CSS_SELECTOR, "#resend-form button").click()
    browser.shot("resent")

    # then: it is consumed
    def consumed():
        browser.get(detail)
        return "Consumed" in browser.find_element(By.CSS_SELECTOR, ".field-status").text

    wait_until(consumed, "the resent message to be consumed", interval=2)
    browser.shot("consumed")

    # and: the order is booked; its voucher is found by the merchant's order number
    browser.get(f"{stack.base}/admin/accounting/voucher/?q=e2e-dead-1")
    rows = [
        (a.text, a.get_attribute("href"))
        for a in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr th a")
    ]
    assert [text for text, _ in rows] == [f"order.paid:{order['out_trade_no']}"]
    browser.get(rows[0][1])
    assert "Merchant payable" in text_of(browser)
    browser.shot("voucher")
    browser.get(f"{stack.base}/admin/messaging/message/dashboard/")
    browser.shot("dashboard")


def test_api_docs_render_the_operations_offline(stack, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.base}/api/docs/")
    operations = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock"), "Swagger UI's operations"
    )
    browser.shot("api-docs")

    text = text_of(browser)
    assert len(operations) >= 3
    assert "/api/v1/orders" in text and "paysys API" in text


def test_an_operator_sees_the_overview_and_traces_a_payment(stack, browser):
    from selenium.webdriver.common.by import By

    # given: a paid order, and a stack whose maintenance worker was never started
    order = stack.create_order("e2e-trace-1", amount=2500)
    assert requests.post(order["pay_url"], json={}, timeout=10).status_code == 200
    wait_until(lambda: stack.order_status("e2e-trace-1") == "SUCCESS", "order SUCCESS")

    # when: the operator opens the overview from the admin index
    log_in(stack, browser)
    browser.find_element(By.ID, "ops-overview-link").click()
    wait_until(lambda: browser.find_elements(By.ID, "services"), "the operations overview")
    browser.shot("overview")

    # then: every service's workers are shown alive or dead, with the charts of the last hour
    assert "orders: alive" in browser.find_element(By.ID, "service-orders").text
    assert "maintenance: dead" in browser.find_element(By.ID, "service-core").text
    assert "Degraded" in browser.find_element(By.ID, "verdict").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#charts figure.chart svg")) == 3
    # and: a number links to the list that explains it
    browser.find_element(By.CSS_SELECTOR, "#needs-human a").click()
    wait_until(
        lambda: "TCC" in browser.title or "transaction" in browser.title.lower(),
        "the TCC transaction list",
    )
    browser.shot("needs-human-list")

    # when: the operator traces the order by the merchant's order number
    browser.get(f"{stack.base}/admin/")
    browser.find_element(By.ID, "trace-q").send_keys("e2e-trace-1")
    browser.find_element(By.CSS_SELECTOR, "#trace-form input[type=submit]").click()
    trace = wait_until(
        lambda: browser.find_elements(By.ID, f"trace-{order['out_trade_no']}"), "the trace"
    )[0]
    browser.shot("trace")

    # then: every step from the bank's notify to the merchant's notification, in time order, each a link
    text = trace.text
    for step in (
        "order created",
        "bank notify received",
        "bank notify stored",
        "TCC complete_order attempt 1 begun",
        "branch funds.credit CONFIRMED",
        "TCC CONFIRMED",
        "payer paid (bank, paid_at)",
        "message order.paid",
    ):
        assert step in text, (step, text)
    browser.find_element(By.LINK_TEXT, "TCC CONFIRMED").click()
    wait_until(
        lambda: "CONFIRMED" in text_of(browser) and "branches" in text_of(browser).lower(),
        "the TCC transaction page",
    )
    browser.shot("trace-tcc")


def test_an_operator_sees_a_service_taken_down_by_hand_and_back(stack, browser):
    """The fund-account service down, seen from admin: ``manage.py stack stop funds`` (as docs/operations.md
    shows), the overview says so, ``stack start funds`` brings it back."""
    from selenium.webdriver.common.by import By

    def funds_row() -> str:
        from selenium.common.exceptions import NoSuchElementException

        browser.get(f"{stack.base}/admin/overview/")
        try:  # a page still loading (the overview asks every service, funds' restart included): ask again
            return browser.find_element(By.ID, "service-funds").text
        except NoSuchElementException:
            return ""

    log_in(stack, browser)
    manage(stack.env, "stack", "stop", "funds")
    try:
        wait_until(
            lambda: "funds: dead" in funds_row(), "the overview to show the funds worker dead"
        )
        assert "Degraded" in browser.find_element(By.ID, "verdict").text
        browser.shot("funds-down")
    finally:
        manage(stack.env, "stack", "start", "funds")
    wait_until(
        lambda: "funds: alive" in funds_row(),
        "the overview to show the funds worker alive again",
        timeout=90,
    )
    browser.shot("funds-back")
