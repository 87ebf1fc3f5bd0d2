"""A real merchant server for tests: a threaded HTTP server on 127.0.0.1 that records every
request and answers as the test tells it, per path (status, headers, body, hang), or else as its
default."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: str
    at: float  # time.time()
    client: tuple = ()  # the sender's (address, port): the same port means a reused connection


@dataclass
class Behaviour:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: str = "ok"
    hang: bool = False  # hold the connection without answering until released
    keep_alive: bool = False  # answer without "Connection: close" and keep the connection open
    drop: bool = False  # read the request, close the connection without a word
    drop_after: bool = (
        False  # with keep_alive: promise keep-alive, then close anyway (a server's idle timeout)
    )


class Receiver:
    def __init__(self, default: Behaviour | None = None) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, list[Behaviour] | Behaviour] = {}
        self.default = default or Behaviour()  # the answer of a path not told
        self.released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                behaviour = receiver._next(self.path)
                with receiver._lock:
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                            self.client_address,
                        )
                    )
                if behaviour.hang:
                    receiver.released.wait(60)
                    return
                if behaviour.drop:
                    self.close_connection = True
                    return
                payload = behaviour.body.encode()
                self.send_response(behaviour.status)
                for name, value in behaviour.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if not behaviour.keep_alive:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.close_connection = not behaviour.keep_alive or behaviour.drop_after

            do_GET = do_POST  # a GET is recorded and answered the same way

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 would refuse a burst of parallel deliveries

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/notify") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *behaviours: Behaviour) -> None:
        """Answer ``path`` with these behaviours in turn; the last one repeats."""
        with self._lock:
            self.behaviours[path] = list(behaviours)

    def _next(self, path: str) -> Behaviour:
        with self._lock:
            queue = self.behaviours.get(path.split("?")[0]) or [self.default]
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
