"""The web process: uvicorn's event loop reads every request, Django answers it on a thread.

Why not Django's WSGI application on a thread-per-connection server (runserver, gunicorn's sync
or gthread workers): there a thread is taken as soon as a client connects and is held while the
client sends its bytes, so a dozen sockets that announce a body and never send it hold every
thread (a denial of service without credentials). Here the request, headers and body, is read by
uvicorn's event loop, where a slow client costs a coroutine, not a thread, and the body has one
deadline (``WEB_READ_TIMEOUT``, then 408). Only a request that has fully arrived takes one of the
``WEB_THREADS`` threads, the only place Django code runs (each thread keeps its own persistent
database connections); a request that finds no thread free within ``WEB_QUEUE_SECONDS`` is a 503
with ``Retry-After``; one API key's requests hold all the threads but one at the most (``_Shares``).
Bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` are refused (413) before they are read, by their
declared length or as soon as they grow past it.

Responses are small (JSON, admin pages, static files of a few hundred KB), so each is built whole
on its thread and then written by the loop: a client slow to read its answer holds no thread either.

The request head (request line and headers) is parsed by h11, which refuses one larger than
``h11_max_incomplete_event_size`` (``manage.py serve``: 16 KB): a client cannot make the loop hold
or copy megabytes of headers (httptools, uvicorn's faster parser, has no such bound).
"""

from __future__ import annotations

import asyncio
import codecs
import io
import ipaddress
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11
from django.conf import settings
from django.utils.http import parse_header_parameters
from uvicorn.protocols.http.h11_impl import H11Protocol

from paysys.core.netguard import client_network


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


@dataclass
class _Response:
    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)


class BufferedWSGI:
    """An ASGI application serving a WSGI application: each request is read whole by the event
    loop, within ``read_timeout``, then handled on one of ``threads`` threads."""

    def __init__(
        self, wsgi_app, *, threads: int, queue_seconds: float, read_timeout: float, max_body: int
    ):
        self.wsgi_app = wsgi_app
        self.threads, self.queue_seconds = threads, queue_seconds
        self.read_timeout, self.max_body = read_timeout, max_body
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="web")
        self._slots: asyncio.Semaphore | None = None  # made on the serving loop
        self._shares: _Shares | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # no lifespan or websocket handling
            return
        try:
            _refuse_foreign_charset(scope)
            body = await self._read_body(scope, receive)
            if body is None:  # the client went away
                return
            response = await self._run(scope, body)
        except _Refused as refused:
            response = _error_response(refused)
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": b"".join(response.chunks)})

    async def _read_body(self, scope, receive) -> bytes | None:
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            if not declared.isdigit():
                raise _Refused(400, "bad_request", "invalid Content-Length")
            raise _Refused(413, "too_large", f"request body over {self.max_body} bytes")
        try:
            async with asyncio.timeout(self.read_timeout):
                chunks, size = [], 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise _Refused(413, "too_large", f"request body over {self.max_body} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.read_timeout:g} s",
            ) from None

    async def _run(self, scope, body: bytes) -> _Response:
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.threads)
            self._shares = _Shares(max(1, self.threads - 1))
        deadline = loop.time() + self.queue_seconds
        async with self._shares.hold(_credentials(scope), deadline):
            await _acquire(self._slots, deadline)
            try:
                return await loop.run_in_executor(self.executor, self._call_wsgi, scope, body)
            finally:
                self._slots.release()

    def _call_wsgi(self, scope, body: bytes) -> _Response:
        environ = wsgi_environ(scope, body)  # on this thread: the loop only reads bytes
        response = _Response()

        def start_response(status, headers, exc_info=None):
            response.status = int(status.split(" ", 1)[0])
            # Django writes Set-Cookie as " name=value; ..." (a leading space): HTTP's parsers,
            # h11's included, refuse whitespace around a value
            response.headers = [
                (name.lower().encode("latin-1"), value.strip().encode("latin-1"))
                for name, value in headers
            ]
            return response.chunks.append

        result = self.wsgi_app(environ, start_response)
        try:
            response.chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return response


class _Shares:
    """One set of credentials (an API key, a service token: the ``Authorization`` header) holds
    at most ``limit`` of the threads, all but one: the others' requests (the bank's notifies
    among them) always find a thread, however many requests one merchant sends at once, within
    its rate limit. A key's requests beyond its share wait here, on the loop, until the same
    deadline as any request; requests without credentials are not counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._requests: Counter = Counter()  # each key's requests holding or waiting

    @asynccontextmanager
    async def hold(self, key: str | None, deadline: float):
        if key is None:
            yield
            return
        semaphore = self._semaphores.setdefault(key, asyncio.Semaphore(self.limit))
        self._requests[key] += 1
        try:
            await _acquire(semaphore, deadline)
            try:
                yield
            finally:
                semaphore.release()
        finally:
            self._requests[key] -= 1
            if not self._requests[key]:
                del self._requests[key], self._semaphores[key]


async def _acquire(semaphore: asyncio.Semaphore, deadline: float) -> None:
    try:
        async with asyncio.timeout_at(deadline):
            await semaphore.acquire()
    except TimeoutError:
        raise _Refused(
            503, "busy", "too many requests in progress, retry shortly", retry_after=1
        ) from None


def _refuse_foreign_charset(scope) -> None:
    """A request whose ``Content-Type`` names a charset other than UTF-8 is a 415 before Django
    sees it. Django decodes the query string and form fields with that charset as it builds the
    request, before any middleware: ``charset=punycode`` and a ``%`` in the query made every path
    a 500 with a traceback, and multipart fields decoded as punycode (quadratic) held a thread
    0.2 s per 64 KB. Every client of this platform sends UTF-8 (browsers, JSON per RFC 8259)."""
    # repeated headers joined, as wsgi_environ hands them to Django
    header = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type")
    if "charset" not in header.lower():
        return
    charset = parse_header_parameters(header)[1].get("charset", "")
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return  # Django ignores a charset Python does not know, and decodes as UTF-8
    if name not in ("utf-8", "ascii"):
        raise _Refused(415, "unsupported_charset", f"charset {charset[:40]!r}: send UTF-8")


def _credentials(scope) -> str | None:
    """The token of the ``Authorization`` header, as the authentication reads it (after the
    scheme, spaces around it ignored): ``Bearer  <key>`` is the same key as ``Bearer <key>``."""
    header = _header(scope, b"authorization")
    if header is None:
        return None
    return header.partition(" ")[2].strip() or header


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _security_headers() -> list[tuple[bytes, bytes]]:
    """What Django's security middlewares put on every answer it makes, for the answers made here
    without Django (400, 408, 413, 415, 503 busy): a browser handles them under the same rules."""
    headers = {
        b"x-content-type-options": "nosniff" if settings.SECURE_CONTENT_TYPE_NOSNIFF else "",
        b"x-frame-options": settings.X_FRAME_OPTIONS,
        b"referrer-policy": settings.SECURE_REFERRER_POLICY or "",
        b"cross-origin-opener-policy": settings.SECURE_CROSS_ORIGIN_OPENER_POLICY or "",
        b"content-security-policy": settings.CONTENT_SECURITY_POLICY,
    }
    return [(name, value.encode("latin-1")) for name, value in headers.items() if value]


def _error_response(refused: _Refused) -> _Response:
    body = json.dumps({"error": {"code": refused.code, "message": str(refused)}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_security_headers(),
    ]
    if refused.retry_after is not None:
        headers.append((b"retry-after", str(refused.retry_after).encode()))
    # what is left of the request on the socket is not read
    if refused.status in (400, 408, 413, 415):
        headers.append((b"connection", b"close"))
    return _Response(refused.status, headers, [body])


def wsgi_environ(scope, body: bytes) -> dict:
    """PEP 3333's environ for an ASGI HTTP scope whose body has been read."""
    server_host, server_port = scope.get("server") or ("127.0.0.1", 80)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server_host,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper()
        if (
            "_" in key or key == "CONTENT-LENGTH"
        ):  # X_Forwarded_For must not pass as X-Forwarded-For
            continue
        key = key.replace("-", "_")
        headers.setdefault(key if key == "CONTENT_TYPE" else f"HTTP_{key}", []).append(
            value.decode("latin-1")
        )
    environ.update(
        (key, ",".join(values)) for key, values in headers.items()
    )  # repeated: joined once
    return environ


# --- the connection, before a request exists: what uvicorn's h11 protocol does not bound ----------


class _RefuseChunkedBodies:
    """Stands in for the protocol's h11 connection: a request framed with Transfer-Encoding is a
    protocol error (400, connection closed) before any chunk is parsed. uvicorn appends each chunk
    to the body one by one on the event loop: 65,000 one-byte chunks cost 0.4 s of it per request.
    Every client of this API sends Content-Length."""

    def __init__(self, conn: h11.Connection):
        self._conn = conn

    def next_event(self):
        event = self._conn.next_event()
        if isinstance(event, h11.Request) and any(
            name.lower() == b"transfer-encoding" for name, _ in event.headers
        ):
            raise h11.RemoteProtocolError(
                "chunked request bodies are not accepted: send Content-Length"
            )
        return event

    def __getattr__(self, name):
        return getattr(self._conn, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the bounds a server facing the internet needs before a request
    exists (uvicorn starts no timer until a first response, and accepts every connection):

    * a head deadline: a connection must deliver a complete request head within
      ``WEB_HEAD_TIMEOUT`` seconds of connecting or of its previous response, however it
      trickles, else it is closed (idle keep-alive connections: ``WEB_KEEPALIVE_SECONDS``);
    * at most ``WEB_MAX_CONNECTIONS`` connections per process and ``WEB_MAX_CONNECTIONS_PER_ADDRESS``
      from one client address: beyond them a new connection is closed at once (one client cannot
      take every file descriptor);
    * a request head of at most ``WEB_MAX_HEAD_BYTES``, however it arrives (h11's own bound
      holds only while the head is incomplete: one of 120 KB sent in one write passed it);
    * a send deadline: a client that stops reading its answer (the transport's buffer full) and
      has not read on within ``WEB_SEND_TIMEOUT`` seconds is cut off (closing would wait for the
      buffer to drain, for ever: 200 such sockets held 30 MB and their connection slots);
    * no chunked request bodies (``_RefuseChunkedBodies``)."""

    per_address: Counter = Counter()  # open connections per client address, in this process

    def connection_made(self, transport):
        super().connection_made(transport)
        self.conn = _RefuseChunkedBodies(self.conn)
        self._address = client_network((self.client or ("",))[0])  # an IPv6 client: its /64
        self._head_timer = None
        self._send_timer = None  # armed while the client does not read what it is sent
        self._head_seen = b""  # the next head's bytes so far (up to the limit, for its end)
        GuardedH11Protocol.per_address[self._address] += 1
        if (
            len(self.connections) > settings.WEB_MAX_CONNECTIONS
            or GuardedH11Protocol.per_address[self._address]
            > settings.WEB_MAX_CONNECTIONS_PER_ADDRESS
        ):
            self.transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc):
        GuardedH11Protocol.per_address[self._address] -= 1
        if GuardedH11Protocol.per_address[self._address] <= 0:
            del GuardedH11Protocol.per_address[self._address]
        self._disarm_head_timer()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(settings.WEB_SEND_TIMEOUT, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def data_received(self, data: bytes) -> None:
        if not self._in_request():
            self._arm_head_timer()  # the first byte after a response starts the next head's deadline
            if self._head_too_large(data):
                self.send_400_response("Invalid HTTP request received.")  # what h11's bound says
                return
        super().data_received(data)
        if self._in_request():
            self._disarm_head_timer()
            self._head_seen = b""

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the head being read runs past ``WEB_MAX_HEAD_BYTES`` without its blank line
        (the bytes after it are the body, or the next request: not counted here)."""
        limit = settings.WEB_MAX_HEAD_BYTES
        seen = self._head_seen + data[: limit + 4 - len(self._head_seen)]
        if b"\r\n\r\n" in seen:
            self._head_seen = b""
            return False
        self._head_seen = seen
        return len(seen) > limit

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot read (a malformed head, a bad Content-Length,
        a chunked body): the JSON error, with the security headers, of every other refusal."""
        response = _error_response(_Refused(400, "bad_request", msg))
        for event in (
            h11.Response(status_code=400, headers=response.headers, reason=b"Bad Request"),
            h11.Data(data=b"".join(response.chunks)),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next head's deadline runs from here (bytes of it may be in already)

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(settings.WEB_HEAD_TIMEOUT, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()


def public_bind_refusal(bind: str) -> str | None:
    """Why the web process may not listen on ``bind``: the embedded default's secrets are in
    the repository, so anyone who reaches it could sign bank notifies (orders paid) and steer the
    simulators. None when ``bind`` is a loopback address or the secrets are the operator's."""
    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    public = [
        name
        for name in ("SECRET_KEY", "BANK_SHARED_SECRET")
        if settings.EMBEDDED and settings.DEBUG and not os.environ.get(name)
    ]
    if loopback or not public:
        return None
    return (
        f"BIND={bind} would let anyone who reaches this machine use the embedded default's "
        f"secrets ({', '.join(public)} are the public ones in the repository): they sign bank "
        "notifies, so a stranger could mark orders paid. Bind 127.0.0.1 (the default), or set "
        "your own secrets first: export SECRET_KEY=... BANK_SHARED_SECRET=... (SECURITY.md)"
    )
