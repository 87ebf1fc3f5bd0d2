"""The web process (``manage.py serve``, paysys/core/serving.py) and its static files."""

from __future__ import annotations

import os

from paysys.settings.environment import env_bool, env_float, env_int

# --- web process ----------------------------------------------------------------------------------
# WEB_WORKERS processes; in each, an event loop reads every request (a slow client costs no thread)
# and WEB_THREADS threads run Django. A request whose body has not arrived WEB_READ_TIMEOUT seconds
# after its headers is a 408; one that finds no thread free within WEB_QUEUE_SECONDS is a 503 with
# Retry-After. Each thread may hold a connection to every service database it touches: workers x
# threads x 7 must stay under the database's max_connections (MariaDB's default is 151).
WEB_WORKERS = env_int("WEB_WORKERS", 2)
WEB_THREADS = env_int("WEB_THREADS", 4)
WEB_QUEUE_SECONDS = env_float("WEB_QUEUE_SECONDS", 2)
WEB_READ_TIMEOUT = env_float("WEB_READ_TIMEOUT", 10)
WEB_KEEPALIVE_SECONDS = env_int("WEB_KEEPALIVE_SECONDS", 5)
WEB_GRACEFUL_SECONDS = env_int("WEB_GRACEFUL_SECONDS", 10)
WEB_ACCESS_LOG = env_bool("WEB_ACCESS_LOG", False)
# a connection delivers each request head within this many seconds (of connecting, or of its
# previous response), else it is closed; at most this many connections per process, and per
# client address (more: closed at once)
WEB_HEAD_TIMEOUT = env_float("WEB_HEAD_TIMEOUT", 10)
WEB_MAX_CONNECTIONS = env_int("WEB_MAX_CONNECTIONS", 4000)
WEB_MAX_CONNECTIONS_PER_ADDRESS = env_int("WEB_MAX_CONNECTIONS_PER_ADDRESS", 256)
# a client that stops reading its answer is cut off after this many seconds without reading on
WEB_SEND_TIMEOUT = env_float("WEB_SEND_TIMEOUT", 30)
# the request line and headers together, at most (larger: refused before they are read whole)
WEB_MAX_HEAD_BYTES = env_int("WEB_MAX_HEAD_BYTES", 16 * 1024)

# --- static files -----------------------------------------------------------------------------

STATIC_URL = "static/"
# the web process serves the admin's and the API docs' static files itself (whitenoise), with DEBUG
# off too, found through the apps' static folders at start-up: no collectstatic step to forget.
# A deployment that prefers collected files sets STATIC_ROOT and runs collectstatic.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True
