"""The requests in flight: one asyncio event loop on a background thread of this process sends
them; the pass's thread reads the counters (the in-flight limits) and the queue of finished ones.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from notifications.models import Notification
from paysys.core import http
from paysys.core.processes import PerProcess


@dataclass
class InFlight:
    record: Notification
    number: int
    trigger: str
    headers: dict
    host: str  # host_key(record.url): what the in-flight limit counts
    response: http.Response | None = None


def host_key(url: str) -> str:
    """``host:port`` of a URL: the unit of the per-endpoint in-flight limit. Not the URL, which
    a merchant varies at will (a query string, a path) to reach one server as many endpoints."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # never accepted; counted as itself
        return url
    return f"{(parts.hostname or '').rstrip('.')}:{port}"


class Flight:
    """The requests in flight in this process: the event loop thread that runs them, how many
    there are (overall and per host, the limits' counters) and the queue of finished ones.
    It outlives a pass: a pass that ends at its deadline leaves its slow requests running, and
    the next pass in this process records them, so no pass ever stops claiming to wait out a
    hanging merchant's 15 s."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: queue.Queue[InFlight] = queue.Queue()
        self.count = 0
        self.by_host: dict[str, int] = {}
        self.host_endpoints: dict[str, set[int]] = {}  # the endpoints seen of each host
        self.tasks: set[asyncio.Task] = set()  # the loop keeps only weak references
        self.loop = _new_event_loop()
        threading.Thread(
            target=self.loop.run_forever, name="paysys-notify-http", daemon=True
        ).start()

    def full_endpoints(self) -> list[int]:
        """Every endpoint seen of the hosts at their limit: the next claim leaves them out."""
        limit = settings.NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT
        with self.lock:
            return [
                endpoint_id
                for host, n in self.by_host.items()
                if n >= limit
                for endpoint_id in self.host_endpoints.get(host, ())
            ]

    def room(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            return settings.NOTIFY_MAX_IN_FLIGHT - self.count, dict(self.by_host)

    def learn(self, endpoint_id: int, host: str) -> None:
        with self.lock:
            if (
                len(self.host_endpoints) > 10_000
            ):  # bounded: forget the hosts with nothing in flight
                self.host_endpoints = {
                    h: ids for h, ids in self.host_endpoints.items() if h in self.by_host
                }
            self.host_endpoints.setdefault(host, set()).add(endpoint_id)

    def add(self, item: InFlight) -> None:
        with self.lock:
            self.count += 1
            self.by_host[item.host] = self.by_host.get(item.host, 0) + 1

    def remove(self, items: list[InFlight]) -> None:
        with self.lock:
            for item in items:
                self.count -= 1
                self.by_host[item.host] -= 1
                if not self.by_host[item.host]:
                    del self.by_host[item.host]

    def start(self, items: list[InFlight]) -> None:
        # one hand-off to the loop thread per batch, not one wake-up per request
        self.loop.call_soon_threadsafe(self._start, items)

    def _start(self, items: list[InFlight]) -> None:  # runs on the loop thread
        for item in items:
            task = self.loop.create_task(
                http.post(
                    item.record.url,
                    item.headers,
                    item.record.body.encode(),
                    connect_timeout=settings.NOTIFY_CONNECT_TIMEOUT,
                    total_timeout=settings.NOTIFY_TOTAL_TIMEOUT,
                )
            )
            self.tasks.add(task)
            task.add_done_callback(lambda t, item=item: self._finished(item, t))

    def _finished(self, item: InFlight, task) -> None:  # runs on the loop thread
        self.tasks.discard(task)
        try:
            item.response = task.result()
        except BaseException as exc:  # noqa: BLE001 - a bug in the client is still an attempt, recorded
            item.response = http.internal_error(exc)
        self.done.put(item)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:  # libuv's loop: about a fifth less CPU per request than asyncio's own (bench_notify)
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


this_process = PerProcess(Flight).get  # this process's flight; a forked child starts its own
