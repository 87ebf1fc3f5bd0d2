"""The platform's one outbound HTTP client: a POST to the address that was checked.

Every request the platform sends to an address someone else supplied goes through here: merchant
notifications (``notifications.delivery``, many at once on a long-lived event loop) and message
check-backs (``paysys.messaging.recovery``, through :func:`post_all`).

Why a small client of our own (asyncio streams + h11, the HTTP/1.1 parser under httpx) instead
of ``requests``/``httpx``: the SSRF guard must hold on the address actually connected to. Here
the name is resolved once, every address is checked with ``paysys.core.netguard.host_refusal``,
and the socket is opened to that checked IP (TLS still verifies the certificate against the host
name), so a DNS answer that changes between check and connect (rebinding) cannot slip through.
Redirects are never followed; the whole attempt (resolve, connect, send, answer) is bounded by
one deadline, and the connect alone by its own; at most ``DRAIN_BYTES`` of an answer are read
(its first ``EXCERPT_BYTES`` kept). Connections are kept open a few seconds and reused for the
next request to the same host (HTTP/1.1 keep-alive), which halves the CPU a delivery costs on
both ends.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import h11

from paysys.core.netguard import host_refusal

EXCERPT_BYTES = 2048
USER_AGENT = "paysys-webhooks/1"

_tls_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


@dataclass
class Response:
    """What came of one attempt. ``error_class`` is empty for an HTTP answer of any status."""

    started_at: datetime
    duration_ms: int = 0
    address: str = ""
    status_code: int | None = None
    excerpt: str = ""
    retry_after: float | None = None
    location: str = ""
    error_class: str = ""
    error: str = ""
    refused: bool = False  # never connected: the target is not allowed
    headers: dict = field(default_factory=dict)


class Refused(Exception):
    pass


DNS_CACHE_SECONDS = 5.0
_dns_cache: dict[tuple[str, int], tuple[float, list[str]]] = {}


async def resolve(host: str, port: int) -> list[str]:
    """Every address of ``host`` (an IP literal resolves to itself). Uses socket.getaddrinfo,
    looked up at call time, so tests can make a name resolve anywhere. Answers are kept a few
    seconds: safe for the guard, which checks (and connects to) exactly the addresses returned."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    cached = _dns_cache.get((host, port))
    if cached and cached[0] > time.monotonic():
        return cached[1]
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        None, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    )
    addresses: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    if len(_dns_cache) > 10_000:
        _dns_cache.clear()
    _dns_cache[(host, port)] = (time.monotonic() + DNS_CACHE_SECONDS, addresses)
    return addresses


async def post(
    url: str, headers: dict[str, str], body: bytes, *, connect_timeout: float, total_timeout: float
) -> Response:
    result = Response(started_at=datetime.now(tz=UTC))
    started = time.monotonic()
    try:
        async with asyncio.timeout(total_timeout):
            await _post(result, url, headers, body, connect_timeout)
    except TimeoutError:
        result.error_class = result.error_class or "timeout"
        result.error = result.error or f"no complete answer within {total_timeout:g} s"
    except Refused as exc:
        result.refused = True
        result.error_class = result.error_class or "refused_target"
        result.error = str(exc)
    except ssl.SSLError as exc:
        result.error_class, result.error = "tls", f"{exc.__class__.__name__}: {exc}"
    except (h11.ProtocolError, UnicodeError, ValueError) as exc:
        result.error_class, result.error = "protocol", f"{exc.__class__.__name__}: {exc}"
    except OSError as exc:
        result.error_class = result.error_class or "connect"
        result.error = result.error or f"{exc.__class__.__name__}: {exc}"
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


async def _post(
    result: Response, url: str, headers: dict[str, str], body: bytes, connect_timeout: float
) -> None:
    parts = urlsplit(url)
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.username
        or parts.password
    ):
        result.error_class = "invalid_url"
        raise Refused(f"{url!r} is not an http(s) URL with a host and no credentials")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except socket.gaierror as exc:
        result.error_class = "connect"
        raise OSError(f"{host} does not resolve: {exc}") from exc
    # every address must pass, not just the one we would use: an attacker's name that resolves
    # to both a public and a private address is refused outright
    reason = host_refusal(host, addresses)
    if reason:
        raise Refused(reason)
    key = (parts.scheme, host, port)
    tls_host = host if parts.scheme == "https" else None
    pool = _loop_pool()
    conn = pool.take(key, addresses)
    if conn is not None:
        try:
            await _exchange(result, conn, parts, host, port, headers, body)
            pool.give_back(key, conn)
            return
        except (OSError, h11.RemoteProtocolError):
            conn.close()
            if conn.received:
                raise
            # the server closed the idle connection as we reused it (no answer began): the
            # request goes once more, on a new connection; the webhook-id lets it deduplicate
            result.status_code, result.headers = None, {}
        except BaseException:
            conn.close()
            raise
    conn = await _connect(result, addresses, port, tls_host, connect_timeout)
    try:
        await _exchange(result, conn, parts, host, port, headers, body)
    except BaseException:
        conn.close()
        raise
    pool.give_back(key, conn)


def post_all(
    requests: list[tuple[str, dict[str, str], bytes]], *, total_timeout: float
) -> list[Response]:
    """:func:`post` each ``(url, headers, body)`` at once, from synchronous code, and return their
    answers in order. Each is bounded by ``total_timeout``, so the whole call is too: a server
    that answers a byte at a time costs its own request the deadline, and nobody else anything.

    It runs on an event loop of its own, closed before returning, connections and all; a name
    lookup still running at the deadline is left to finish in its thread, never waited for."""
    if not requests:
        return []

    async def all_at_once():
        return await asyncio.gather(
            *(
                post(url, headers, body, connect_timeout=total_timeout, total_timeout=total_timeout)
                for url, headers, body in requests
            ),
            return_exceptions=True,
        )

    loop = asyncio.new_event_loop()
    try:
        answers = loop.run_until_complete(all_at_once())
        _, pool = _pools.pop(id(loop), (None, None))
        for conns in pool.idle.values() if pool else ():
            for conn in conns:
                conn.close()
        loop.run_until_complete(asyncio.sleep(0))  # the aborted transports release their sockets
    finally:
        loop.close()  # shuts its lookup threads down without waiting
    return [
        answer if isinstance(answer, Response) else internal_error(answer) for answer in answers
    ]


def internal_error(exc: BaseException) -> Response:
    """The answer of a request whose client raised: a bug here is still an attempt, recorded."""
    return Response(
        started_at=datetime.now(tz=UTC),
        error_class="internal",
        error=f"{exc.__class__.__name__}: {exc}",
    )


@dataclass
class _Connection:
    """A connection to a checked address, kept open between requests to the same host."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    address: str
    http: h11.Connection = field(default_factory=lambda: h11.Connection(our_role=h11.CLIENT))
    idle_since: float = 0.0
    received: bool = False  # any byte of an answer on the current request

    def close(self) -> None:
        self.writer.transport.abort()  # never wait for a polite close

    def usable(self, now: float) -> bool:
        return (
            now - self.idle_since < KEEP_ALIVE_SECONDS
            and not self.writer.transport.is_closing()
            and not self.reader.at_eof()
        )


KEEP_ALIVE_SECONDS = 4.0  # below the 5 s idle timeout common servers use
POOL_PER_HOST = 16


class _Pool:
    """Idle connections per (scheme, host, port), used only on their event loop's thread.

    Reusing a connection keeps the guard: it was opened to an address that was checked, and it
    is reused only while that address is still among the host's checked addresses."""

    def __init__(self) -> None:
        self.idle: dict[tuple, list[_Connection]] = {}
        self.swept = time.monotonic()

    def take(self, key: tuple, addresses: list[str]) -> _Connection | None:
        now = time.monotonic()
        if now - self.swept > KEEP_ALIVE_SECONDS:
            self._sweep(now)
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable(now) and conn.address in addresses:
                conn.received = False
                return conn
            conn.close()
        return None

    def give_back(self, key: tuple, conn: _Connection) -> None:
        if conn.http.our_state is h11.DONE and conn.http.their_state is h11.DONE:
            conn.http.start_next_cycle()
            conn.idle_since = time.monotonic()
            conns = self.idle.setdefault(key, [])
            if len(conns) < POOL_PER_HOST:
                conns.append(conn)
                return
        conn.close()

    def _sweep(self, now: float) -> None:
        self.swept = now
        for key in list(self.idle):
            keep = []
            for conn in self.idle[key]:
                (keep.append(conn) if conn.usable(now) else conn.close())
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]


_pools: dict[int, tuple[asyncio.AbstractEventLoop, _Pool]] = {}


def _loop_pool() -> _Pool:
    """The pool of the running loop: connections belong to the loop that opened them."""
    loop = asyncio.get_running_loop()
    entry = _pools.get(id(loop))
    if entry is None or entry[0] is not loop:
        for key, (other, _) in list(_pools.items()):
            if other.is_closed():
                del _pools[key]
        entry = _pools[id(loop)] = (loop, _Pool())
    return entry[1]


async def _connect(result, addresses, port, tls_host, connect_timeout) -> _Connection:
    error: OSError | None = None
    for address in addresses:
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    address,
                    port,
                    ssl=tls_context() if tls_host else None,
                    server_hostname=tls_host,
                )
            return _Connection(reader, writer, address)
        except TimeoutError:
            result.error_class = "timeout"
            error = OSError(f"connect to {address}:{port} timed out after {connect_timeout:g} s")
        except ssl.SSLError:
            raise
        except OSError as exc:
            result.error_class = "connect"
            error = OSError(f"connect to {address}:{port}: {exc.strerror or exc}")
    raise error or OSError("no address to connect to")


DRAIN_BYTES = 64 * 1024  # a longer answer is cut off and its connection closed, not reused


async def _exchange(result, conn: _Connection, parts, host, port, headers, body) -> None:
    result.address = conn.address
    http = conn.http
    default_port = 443 if parts.scheme == "https" else 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request_headers = [
        ("Host", host if port == default_port else f"{host}:{port}"),
        ("User-Agent", USER_AGENT),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *headers.items(),
    ]
    conn.writer.write(
        b"".join(
            (  # one write, one segment: the request is small
                http.send(h11.Request(method="POST", target=target, headers=request_headers)),
                http.send(h11.Data(data=body)),
                http.send(h11.EndOfMessage()),
            )
        )
    )
    await conn.writer.drain()
    excerpt = bytearray()
    read = 0
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = await conn.reader.read(65536)
            conn.received = conn.received or bool(data)
            http.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            result.status_code = event.status_code
            result.headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers
            }
            result.retry_after = parse_retry_after(result.headers.get("retry-after"))
            result.location = result.headers.get("location", "")
        elif isinstance(event, h11.Data):
            excerpt += event.data[: EXCERPT_BYTES - len(excerpt)]
            read += len(event.data)
            if read > DRAIN_BYTES:
                break  # enough to show a human; the connection is not reused (not DONE)
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    result.excerpt = excerpt.decode("utf-8", errors="replace")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds the server asked us to wait: delta-seconds or an HTTP date; None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(tz=UTC)).total_seconds())
