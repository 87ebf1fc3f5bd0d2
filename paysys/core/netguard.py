"""Where the platform may send requests (merchant notify URLs, check-back URLs): never to its own
network unless allowed. The single place that decides; callers check twice, when a URL is
accepted (a clear 400) and on the address actually connected to when sending (DNS rebinding).

``NOTIFY_ALLOWED_NETWORKS`` (comma-separated CIDRs) lists the private ranges that are allowed;
the embedded default allows loopback, production settings allow none.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as LookupTimeout
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

from paysys.core.errors import InvalidInput


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in spec)


def allowed_networks() -> tuple:
    return _networks(tuple(settings.NOTIFY_ALLOWED_NETWORKS))


# never public, though Python's ``is_global`` says otherwise for parts of them: IPv6 site-local
# (deprecated, still routed inside some networks) and the IETF protocol assignments block
# (192.0.0.9 and .10 are anycast services of the provider's own network, not the internet)
NOT_PUBLIC = (ipaddress.ip_network("fec0::/10"), ipaddress.ip_network("192.0.0.0/24"))


def address_refusal(address: str) -> str | None:
    """Why the platform must not connect to ``address`` (an IP literal), or None if it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):  # IPv4 carried inside IPv6 is judged as that IPv4
        ip = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or ip
    if any(ip in network for network in allowed_networks()):
        return None
    for kind in ("loopback", "link_local", "multicast", "reserved", "unspecified", "private"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address (allow it with NOTIFY_ALLOWED_NETWORKS)"
    if not ip.is_global or any(ip in network for network in NOT_PUBLIC):
        return f"{ip} is not a public address (allow it with NOTIFY_ALLOWED_NETWORKS)"
    return None


def host_refusal(host: str, addresses: list[str]) -> str | None:
    """Why the platform must not connect to ``host`` (a name or an IP literal) given every
    address it resolved to, or None. All must pass: a name with one internal address among public
    ones is refused. The reason for a name never says what it resolves to, so whoever supplied
    the URL learns nothing of the platform's own network from it."""
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            if is_ip_literal(host):
                return reason  # the caller wrote this address: naming it reveals nothing
            return (
                f"{host} is not a public address (allow its network with NOTIFY_ALLOWED_NETWORKS)"
            )
    return None


def client_network(address: str) -> str:
    """What a per-client limit counts: an IPv4 address, or an IPv6 address's /64. One IPv6
    client is commonly given a whole /64 (2**64 addresses), so counting its addresses one by one
    would give it a fresh limit per address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


# A name is looked up while a request waits (a merchant's notify URL, an order's): whoever
# controls the name's DNS server controls how long that takes, so the lookup runs on a few
# threads of its own and the request waits at most LOOKUP_SECONDS for it. A lookup still
# running then is a name that does not resolve (yet); a flood of slow names fills these threads,
# never the web server's.
LOOKUP_SECONDS = 2.0
_lookups: tuple[int, ThreadPoolExecutor] | None = None  # (the process it was made in, the pool)


def _lookup(host: str, port: int) -> list[str]:
    global _lookups
    if _lookups is None or _lookups[0] != os.getpid():  # a forked child has none of its threads
        _lookups = (os.getpid(), ThreadPoolExecutor(4, thread_name_prefix="netguard-lookup"))
    future = _lookups[1].submit(socket.getaddrinfo, host, port, proto=socket.IPPROTO_TCP)
    try:
        infos = future.result(timeout=LOOKUP_SECONDS)
    except LookupTimeout:
        future.cancel()  # still queued behind slow ones: never run
        raise socket.gaierror(f"no answer within {LOOKUP_SECONDS:g} s") from None
    return [sockaddr[0] for *_, sockaddr in infos]


def url_refusal(url: str, *, resolve: bool = True, must_resolve: bool = False) -> str | None:
    """Why ``url`` is not an acceptable outbound target, or None. Resolves the host name (waiting
    at most ``LOOKUP_SECONDS``) and refuses it if any of its addresses is refused. A name that does
    not resolve (yet) is accepted unless ``must_resolve``: the check on the address connected to,
    at send time, still holds."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    try:
        port = parts.port
    except ValueError:  # "host:99999"
        return "has a port out of range"
    if port == 0:
        return "has port 0"
    host = parts.hostname
    if is_ip_literal(host):
        return address_refusal(host)
    if not resolve:
        return None
    try:
        addresses = _lookup(host, port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        return f"host {host!r} does not resolve ({exc})" if must_resolve else None
    return host_refusal(host, addresses)


def check_url(url: str, *, field: str, must_resolve: bool = False) -> None:
    """Raise InvalidInput (a 400 naming ``field``) unless ``url`` is an acceptable target."""
    reason = url_refusal(url, must_resolve=must_resolve)
    if reason:
        raise InvalidInput(f"{field} is not an allowed target: {reason}", fields={field: reason})
