"""The web process (paysys/core/serving.py, ``manage.py serve``): slow clients hold no thread.

The attack it answers: a dozen sockets sending ``POST /gateway/bank/notify`` with
``Content-Length: 100`` and no body used to make every request a 503 for as long as they stayed
open (runserver had no read timeout, and the concurrency limit took its slot before the body was
read). Given the real server, started as the Procfile starts it, with fewer threads than attacking
sockets: other requests are still answered at once, and each slow request is a 408 at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from paysys.core.serving import BufferedWSGI
from tests.core.test_embedded_smoke import free_port, processes, wait_for  # noqa: F401 - fixture

READ_TIMEOUT = 3.0
HEAD_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0
PER_ADDRESS = 40


@pytest.fixture
def server(processes):
    port = free_port()
    env = {
        **processes.env,
        "PORT": str(port),
        "WEB_WORKERS": "1",
        "WEB_THREADS": "2",
        "WEB_READ_TIMEOUT": str(READ_TIMEOUT),
        "WEB_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "WEB_SEND_TIMEOUT": str(SEND_TIMEOUT),
        "WEB_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
    }
    processes.start("web", "manage.py", "serve", env=env)
    base = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return requests.get(f"{base}/api/v1/nowhere", timeout=2).status_code == 404
        except requests.ConnectionError:
            return False

    wait_for(answers, 60, "manage.py serve to answer", processes)
    return port, base


def slow_client(port: int, body_sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /gateway/bank/notify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + body_sent
    )
    return sock


def read_status(sock: socket.socket) -> tuple[int, float]:
    started = time.monotonic()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), time.monotonic() - started


def test_slow_body_clients_hold_no_thread_and_get_a_408_at_their_deadline(server):
    port, base = server
    # given: twelve clients that announce a 100-byte body and never send it (the server has 2 threads)
    attackers = [slow_client(port) for _ in range(12)]
    time.sleep(0.3)
    try:
        # when: anyone else calls, several times, while they hang
        started = time.monotonic()
        answers = [requests.get(f"{base}/api/v1/orders", timeout=5) for _ in range(5)]
        notify = requests.post(
            f"{base}/gateway/bank/notify",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        elapsed = time.monotonic() - started

        # then: they are answered at once (no 503, no wait), the bank's notify path included
        assert [r.status_code for r in answers] == [401] * 5
        assert (
            notify.status_code == 401 and notify.json()["error"]
        )  # unsigned: refused, but answered
        assert elapsed < 2.5, f"other requests waited {elapsed:.1f} s behind slow clients"

        # and: each slow client is answered 408 JSON when its body deadline passes, not before
        statuses = [read_status(sock) for sock in attackers]
        assert {status for status, _ in statuses} == {408}
    finally:
        for sock in attackers:
            sock.close()


def test_a_trickled_body_gets_one_deadline_not_one_per_byte(server):
    port, _ = server
    sock = slow_client(port, b"{")
    started = time.monotonic()
    try:
        for _ in range(
            int(READ_TIMEOUT * 4)
        ):  # one byte every 0.5 s: each arrives well within any per-read timeout
            time.sleep(0.5)
            try:
                sock.sendall(b" ")
            except OSError:
                break  # the server answered and closed
        status, _ = read_status(sock)
    finally:
        sock.close()

    assert status == 408
    assert time.monotonic() - started < READ_TIMEOUT + 2.5


def test_a_declared_body_over_the_limit_is_a_413_before_any_byte_is_read(server):
    port, _ = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /gateway/bank/notify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n"
        )
        status, elapsed = read_status(sock)
    finally:
        sock.close()

    assert status == 413 and elapsed < 2


# --- the adapter alone: the thread limit and what reaches Django -------------------------------


def run_requests(
    app: BufferedWSGI, bodies: list[list[dict]], keys: list[bytes | None] | None = None
) -> list[tuple[int, dict, bytes]]:
    """Each request (its list of ASGI receive messages; with ``keys``, its Authorization
    header) sent to ``app`` concurrently."""

    async def one(messages, key):
        queue = list(messages)
        sent = []

        async def receive():
            return queue.pop(0) if queue else await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/x",
            "query_string": b"a=1",
            "http_version": "1.1",
            "headers": [
                (b"content-type", b"application/json"),
                (b"x_forwarded_for", b"6.6.6.6"),
                (b"x-forwarded-for", b"1.2.3.4"),
                *([(b"authorization", key)] if key else []),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "scheme": "http",
        }
        await app(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

    async def all_of_them():
        return await asyncio.gather(
            *(
                one(messages, key)
                for messages, key in zip(bodies, keys or [None] * len(bodies), strict=True)
            )
        )

    return asyncio.run(all_of_them())


def test_a_request_finding_no_thread_free_is_a_503_busy_with_retry_after():
    release = threading.Event()
    seen = []

    def slow_wsgi(environ, start_response):
        seen.append(
            (
                environ["wsgi.input"].read(),
                environ.get("HTTP_X_FORWARDED_FOR"),
                environ["QUERY_STRING"],
            )
        )
        release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    app = BufferedWSGI(slow_wsgi, threads=1, queue_seconds=0.3, read_timeout=5, max_body=100)
    body = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}"},
    ]
    threading.Timer(1.0, release.set).start()

    first, second = run_requests(app, [body, body])

    statuses = sorted([first[0], second[0]])
    assert statuses == [200, 503]
    busy = first if first[0] == 503 else second
    assert busy[1][b"retry-after"] == b"1" and json.loads(busy[2])["error"]["code"] == "busy"
    # and: Django got the whole body, and a header spelled with "_" cannot pose as X-Forwarded-For
    assert seen == [(b'{"a":1}', "1.2.3.4", "a=1")]


def test_one_api_key_holds_all_threads_but_one_so_other_clients_are_served():
    # given: two threads; merchant A sends six slow requests at once, then merchant B one
    def slow_wsgi(environ, start_response):
        time.sleep(0.4)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ.get("HTTP_AUTHORIZATION", "").encode()]

    app = BufferedWSGI(slow_wsgi, threads=2, queue_seconds=1.0, read_timeout=5, max_body=100)
    body = [{"type": "http.request", "body": b"{}"}]

    # (spaces after the scheme name the same key, as the authentication reads it)
    keys = [b"Bearer " + b" " * k + b"A" for k in range(6)] + [b"Bearer B"]
    answers = run_requests(app, [body] * 7, keys=keys)

    # then: B is served at once on the thread A may not take; A's requests run one at a time,
    # those that would start after the queue deadline are a 503 busy
    assert answers[-1][0] == 200 and answers[-1][2] == b"Bearer B"
    a_statuses = sorted(status for status, _, _ in answers[:-1])
    assert a_statuses.count(200) in (2, 3) and set(a_statuses) == {200, 503}
    assert app._shares._semaphores == {}  # nothing kept for a key with no request


def test_a_body_growing_past_the_limit_without_a_declared_length_is_a_413():
    app = BufferedWSGI(
        lambda e, s: pytest.fail("must not reach Django"),
        threads=1,
        queue_seconds=1,
        read_timeout=5,
        max_body=10,
    )
    chunks = [{"type": "http.request", "body": b"x" * 6, "more_body": True}] * 3

    [(status, headers, body)] = run_requests(app, [chunks])

    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    # answered without Django, under the same security headers as Django's answers
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"x-frame-options"] == b"DENY"
    assert b"default-src 'self'" in headers[b"content-security-policy"]


def test_static_files_are_served_with_debug_off(client, settings):
    settings.DEBUG = False

    response = client.get("/static/admin/css/base.css", secure=True)

    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")


def test_the_web_workers_die_with_their_supervisor_and_free_the_port(processes):
    # given: the web process with two worker processes
    port = free_port()
    env = {**processes.env, "PORT": str(port), "WEB_WORKERS": "2"}
    supervisor = processes.start("web", "manage.py", "serve", env=env)
    base = f"http://127.0.0.1:{port}"

    def workers():
        children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return pids if len(pids) >= 2 and _answers(base) else None

    pids = wait_for(workers, 60, "two web workers answering", processes)

    # when: the supervisor alone is killed outright (no chance to stop its workers)
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(10)
    processes.started.clear()  # its death is the point: the fixture need not watch it any more

    # then: its workers go too, and a new web process can take the port
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]
    processes.start("web-again", "manage.py", "serve", env={**env, "WEB_WORKERS": "1"})
    wait_for(lambda: _answers(base), 60, "the restarted web process", processes)


def _answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/api/v1/nowhere", timeout=2).status_code == 404
    except requests.RequestException:
        return False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_request_head_over_the_limit_is_refused_and_costs_the_server_nothing(server):
    # the attack: 50,000 copies of one header (5 MB) took 10 s of one worker's event loop (the
    # repeated values were joined one by one), and 400 MB of one header grew a worker by 800 MB
    port, base = server
    heads = [b"X-A: " + b"a" * 100 + b"\r\n"] * 50_000, [b"X-Big: " + b"b" * 4_000_000 + b"\r\n"]
    for head in heads:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            try:
                for line in head:
                    sock.sendall(line)
            except OSError:
                pass  # refused and closed while still sending: what should happen
            started = time.monotonic()
            try:
                status, _ = read_status(sock)
            except (OSError, IndexError, ValueError):
                status = None  # closed without an answer
        finally:
            sock.close()
        assert status in (None, 400, 413, 431), status
        assert time.monotonic() - started < 2

    answer = requests.get(f"{base}/api/v1/nowhere", timeout=2, headers={"X-A": "a" * 100})
    assert answer.status_code == 404


def test_a_head_over_the_limit_sent_at_once_is_refused_too(server):
    # h11's bound holds only while a head is incomplete: 120 KB in one write was read whole, and so
    # were 15 KB trickled and then 110 KB at once
    port, base = server
    pad = b"X-Pad: " + b"p" * 120_000 + b"\r\n"
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for writes in ([start + pad + b"\r\n"], [start + pad[:15_000], pad[15_000:] + b"\r\n"]):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            for data in writes:
                with contextlib.suppress(OSError):  # refused and closed while still sending
                    sock.sendall(data)
                time.sleep(0.3)
            status, _ = read_status(sock)
        finally:
            sock.close()
        assert status == 400

    # a head within the limit, with its body in the same write, is served
    body = b'{"x": "' + b"y" * 30_000 + b'"}'
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /api/v1/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        status, _ = read_status(sock)
    finally:
        sock.close()
    assert status == 404


def test_repeated_headers_are_joined_once_on_the_thread_not_on_the_loop():
    from paysys.core.serving import wsgi_environ

    scope = {
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "http_version": "1.1",
        "headers": [(b"x-a", b"a" * 100)] * 100
        + [(b"accept", b"text/html"), (b"accept", b"application/json")],
    }
    started = time.process_time()

    environ = wsgi_environ(scope, b"")

    assert environ["HTTP_ACCEPT"] == "text/html,application/json"
    assert environ["HTTP_X_A"] == ",".join(["a" * 100] * 100)
    assert time.process_time() - started < 0.05


def test_the_admin_login_page_and_its_csrf_cookie_are_served(server):
    # Django writes Set-Cookie with a leading space; h11 refused the whole answer (a 500 for every
    # page setting a cookie: the admin's login form, the CSRF cookie)
    _, base = server

    response = requests.get(f"{base}/admin/login/", timeout=5)

    assert response.status_code == 200 and 'id="id_username"' in response.text
    assert response.cookies.get("csrftoken")
    assert requests.get(f"{base}/static/admin/css/base.css", timeout=5).status_code == 200


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds`` (what it still had to say is read first)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if sock.recv(4096) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def test_a_connection_that_never_completes_its_head_is_closed_at_the_head_deadline(server):
    # the attack: uvicorn starts no timer before a first response, so silent or trickling
    # connections stayed open for ever (40,000 of them took every file descriptor)
    port, base = server
    silent = socket.create_connection(("127.0.0.1", port))
    trickling = socket.create_connection(("127.0.0.1", port))
    after_a_response = socket.create_connection(("127.0.0.1", port))
    try:
        after_a_response.sendall(b"GET /api/v1/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_status(after_a_response)[0] == 404
        after_a_response.sendall(b"G")  # a byte of the next head, then nothing
        started = time.monotonic()
        for _ in range(int(HEAD_TIMEOUT * 2)):
            trickling.sendall(b"X")  # one byte every 0.5 s: each well within any per-read timeout
            time.sleep(0.5)

        assert (
            _closed_within(silent, 2)
            and _closed_within(trickling, 2)
            and _closed_within(after_a_response, 2)
        )
        assert time.monotonic() - started < HEAD_TIMEOUT + 4
    finally:
        for sock in (silent, trickling, after_a_response):
            sock.close()


def test_a_client_that_stops_reading_its_answer_is_cut_off_at_the_send_deadline(server):
    # the attack: request large static files and never read them; an answer the kernel's socket
    # buffer (4 MB at most here) cannot take waits in the process, and a connection closed with
    # an unsent answer waits for it: each held its answer and its slot for ever
    port, _ = server
    big = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    size = 4 * int(
        requests.head(f"http://127.0.0.1:{port}{big}", timeout=10).headers["Content-Length"]
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a client that reads nothing
    sock.connect(("127.0.0.1", port))
    try:
        # four answers of 1.5 MB, asked at once: more than the kernel buffers
        sock.sendall(f"GET {big} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * 4)
        time.sleep(SEND_TIMEOUT + 2)

        received, ended = 0, False
        sock.settimeout(3)
        try:
            while chunk := sock.recv(65536):
                received += len(chunk)
            ended = True  # the server closed it
        except ConnectionResetError:
            ended = True  # the server cut it off
        except TimeoutError:
            pass
        assert ended and received < size, (received, size)
    finally:
        sock.close()


def test_one_address_cannot_hold_more_than_its_share_of_connections(server):
    port, base = server
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(PER_ADDRESS)]
    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(extra, 2)  # closed at once: over this address' share
        extra.close()
        # another client address is served meanwhile
        other = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
        )
        other.sendall(b"GET /api/v1/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_status(other)[0] == 404
        other.close()
    finally:
        for sock in held:
            sock.close()


def test_a_chunked_request_body_is_refused_before_its_chunks_are_parsed(server):
    port, _ = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /gateway/bank/notify HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\na\r\n" * 20_000
            + b"0\r\n\r\n"
        )
        status, elapsed = read_status(sock)
    except OSError:
        status, elapsed = 400, 0.0  # refused and closed while the chunks were still being sent
    finally:
        sock.close()

    assert status == 400 and elapsed < 1


def test_the_embedded_defaults_public_secrets_never_listen_beyond_loopback(settings, monkeypatch):
    from paysys.core.serving import public_bind_refusal

    settings.EMBEDDED, settings.DEBUG = True, True
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("BANK_SHARED_SECRET", raising=False)
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert public_bind_refusal(loopback) is None
    for public in ("0.0.0.0", "::", "192.168.1.5", "my-host"):
        assert "SECRET_KEY, BANK_SHARED_SECRET are the public ones" in public_bind_refusal(public)

    # the operator's own secrets (or the full stack, or production settings) may listen anywhere
    monkeypatch.setenv("SECRET_KEY", "s" * 50)
    monkeypatch.setenv("BANK_SHARED_SECRET", "b" * 50)
    assert public_bind_refusal("0.0.0.0") is None
    monkeypatch.delenv("BANK_SHARED_SECRET")
    assert "BANK_SHARED_SECRET are the public" in public_bind_refusal("0.0.0.0")
    settings.DEBUG = False
    assert public_bind_refusal("0.0.0.0") is None


@pytest.mark.parametrize(
    "content_type, reaches_django",
    [
        ("application/json; charset=punycode", False),
        ("text/plain; charset=idna", False),
        ('multipart/form-data; boundary=XX; charset="utf-7"', False),
        ("application/json; charset=utf-8; charset=rot13", False),  # Django reads the last one
        ("application/json; charset=UTF8", True),
        ("application/json; charset=us-ascii", True),
        ("application/json; charset=no-such-charset", True),  # Django ignores it: UTF-8
        ("application/json", True),
    ],
)
def test_a_charset_other_than_utf8_is_refused_before_django_builds_the_request(
    content_type, reaches_django
):
    """Django decodes the query string and form fields with the request's charset while it builds
    the request, before any middleware: ``charset=punycode`` with a ``%`` in the query was a 500
    on every path, and punycode form fields cost quadratic time."""
    reached = []

    def wsgi(environ, start_response):
        reached.append(environ["CONTENT_TYPE"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = BufferedWSGI(wsgi, threads=1, queue_seconds=1, read_timeout=5, max_body=100)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"a=%61",
        "http_version": "1.1",
        "headers": [(b"content-type", content_type.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))

    if reaches_django:
        assert sent[0]["status"] == 200 and reached == [content_type]
    else:
        headers = dict(sent[0]["headers"])
        assert sent[0]["status"] == 415 and reached == []
        assert json.loads(sent[1]["body"])["error"]["code"] == "unsupported_charset"
        assert headers[b"x-content-type-options"] == b"nosniff"


def test_an_unreadable_request_is_a_400_with_the_security_headers(server):
    port, _ = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()

    head, body = answer.split(b"\r\n\r\n", 1)
    head = head.lower()
    assert head.startswith(b"http/1.1 400") and b"content-type: application/json" in head
    assert b"x-content-type-options: nosniff" in head and b"x-frame-options: deny" in head
    assert json.loads(body)["error"]["code"] == "bad_request"  # JSON, as every other answer
