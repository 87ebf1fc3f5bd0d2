"""``manage.py serve``: the web process (the Procfile's ``web``), uvicorn serving paysys.asgi.

Binds ``BIND`` (default 127.0.0.1) on ``PORT``. ``WEB_WORKERS`` processes, each with an event loop
that reads requests and ``WEB_THREADS`` threads that run Django; the timeouts come from the
environment too (paysys/settings/web.py). Ctrl-C or SIGTERM stops it gracefully.
"""

from __future__ import annotations

import os

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from paysys.core.serving import public_bind_refusal


class Command(BaseCommand):
    help = "Serve the web process with uvicorn (BIND, PORT, WEB_WORKERS, WEB_THREADS, WEB_READ_TIMEOUT)."

    def handle(self, *args, **options):
        bind = os.environ.get("BIND") or "127.0.0.1"
        if refusal := public_bind_refusal(bind):
            raise CommandError(refusal)
        self.stdout.write(
            f"serving on http://{bind}:{settings.PORT}: {settings.WEB_WORKERS} process(es) x "
            f"{settings.WEB_THREADS} threads, bodies within {settings.WEB_READ_TIMEOUT:g} s",
        )
        self.stdout.flush()
        uvicorn.run(
            "paysys.asgi:application",
            host=bind,
            port=settings.PORT,
            workers=settings.WEB_WORKERS,
            lifespan="off",
            interface="asgi3",
            # h11 bounds the request head (below); httptools would grow it without a limit. Our
            # subclass adds a head deadline, connection caps and no chunked bodies (its docstring).
            http="paysys.core.serving:GuardedH11Protocol",
            ws="none",  # no WebSocket endpoint: an Upgrade request is served as plain HTTP
            # client addresses: REMOTE_ADDR, or X-Forwarded-For only through NUM_PROXIES trusted
            # proxies (paysys.api.middleware.client_address), never uvicorn's own reading of it
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=settings.WEB_KEEPALIVE_SECONDS,
            timeout_graceful_shutdown=settings.WEB_GRACEFUL_SECONDS,
            h11_max_incomplete_event_size=settings.WEB_MAX_HEAD_BYTES,
            access_log=settings.WEB_ACCESS_LOG,
            log_level="info",
        )
