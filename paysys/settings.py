"""paysys settings, read from the environment.

Two modes share one code path:

* embedded default (nothing set): every database alias is its own SQLite file under ``var/``
  and Celery uses kombu's ``filesystem://`` transport, so ``make run`` needs no server;
* full stack: ``DATABASE_URL=mysql://root@127.0.0.1:3306/paysys`` gives every service its own
  schema ``paysys_<service>`` and ``CELERY_BROKER_URL=redis://...`` a real broker.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from paysys import topology

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PAYSYS_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
# the embedded default (no DATABASE_URL): a developer's machine, the only place with dev secrets
EMBEDDED = not os.environ.get("DATABASE_URL")

MIN_SECRET_LENGTH = 32
_GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def env_secret(
    name: str,
    *,
    dev_default: str | None = None,
    required: bool = True,
    min_length: int = MIN_SECRET_LENGTH,
) -> str:
    """A secret from the environment, at least ``min_length`` characters.

    ``dev_default`` is used only in the embedded default with DEBUG on; anywhere else a missing
    required secret stops start-up with a message saying what to set.
    """
    value = os.environ.get(name, "")
    if not value:
        if dev_default is not None and EMBEDDED and DEBUG:
            return dev_default
        if not required:
            return ""
        raise ImproperlyConfigured(
            f"{name} is not set. Outside the embedded default (no DATABASE_URL, DEBUG on) every secret "
            f"comes from the environment: export {name}=$({_GENERATE})"
        )
    if len(value) < min_length:
        raise ImproperlyConfigured(
            f"{name} is {len(value)} characters long; use at least {min_length} random characters: "
            f"export {name}=$({_GENERATE})"
        )
    return value


# 50: the length below which `check --deploy` warns (security.W009)
SECRET_KEY = env_secret(
    "SECRET_KEY",
    min_length=50,
    dev_default="dev-only-insecure-key-do-not-use-in-production-0123456789abcdef",
)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
PORT = int(os.environ.get("PORT", "8000"))
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{PORT}").rstrip("/")

# --- the sandbox (bank simulator): an outside party, mounted only where enabled --------------

# on by default only with DEBUG on (the embedded default, the dev full stack, tests); turning it
# on with DEBUG off is refused unless SANDBOX_ALLOW_IN_PRODUCTION says so explicitly (staging)
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", DEBUG)
SANDBOX_ALLOW_IN_PRODUCTION = env_bool("SANDBOX_ALLOW_IN_PRODUCTION", False)
if SANDBOX_ENABLED and not DEBUG and not SANDBOX_ALLOW_IN_PRODUCTION:
    raise ImproperlyConfigured(
        "SANDBOX_ENABLED is on with DEBUG off: the bank simulator would let anyone mark orders paid. "
        "Unset SANDBOX_ENABLED, or set SANDBOX_ALLOW_IN_PRODUCTION=true for a staging deployment whose bank it is."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from this origin: offline, and CSP 'self' holds
    "django_celery_beat",
    "paysys.core",
    "paysys.messaging",
    "paysys.tcc",
    "paysys.gateway",
    *(["paysys.sandbox"] if SANDBOX_ENABLED else []),
    "paysys.demo",
    "paysys.reconcile",
    "paysys.ops",
    "paysys.bench",
    "orders",
    "accounts",
    "accounting",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "paysys.api.middleware.ContentSecurityPolicyMiddleware",
    "paysys.api.middleware.PublicRateLimitMiddleware",
    "paysys.api.middleware.BodySizeLimitMiddleware",
    "paysys.api.middleware.ApiJsonErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "paysys.urls"
WSGI_APPLICATION = "paysys.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- databases: one alias per service (docs/architecture.md, "Services, databases, queues") ---

# alias -> service name used in DATABASE_URL_<SERVICE> and in the schema name paysys_<service>
SERVICE_ALIASES = {database.alias: database.service for database in topology.DATABASES}


def _sqlite_database(path: Path) -> dict:
    # SQLite creates the file but not its folder: a fresh clone's `manage.py migrate` needs var/
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets workers read while another process writes; IMMEDIATE takes the write lock
            # at BEGIN so two writers queue on the busy timeout instead of failing to upgrade.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
        "TEST": {"NAME": str(path.with_name("test_" + path.name))},
    }


# Persistent connections pay off in long-lived threads (Celery workers, a WSGI server's pool).
# runserver starts a thread per request, and closes that thread's connections as the request ends
# (django.core.servers.basehttp.ThreadedWSGIServer.close_request), so none outlives its thread.
DB_CONN_MAX_AGE = int(os.environ.get("DB_CONN_MAX_AGE", "60"))


def _service_database(service: str) -> dict:
    override = os.environ.get(f"DATABASE_URL_{service.upper()}")
    if override:
        return _configure(
            dj_database_url.parse(override, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
        )
    base = os.environ.get("DATABASE_URL")
    if not base:
        return _sqlite_database(VAR_DIR / f"{service}.sqlite3")
    if base.startswith("sqlite"):
        return _sqlite_database(VAR_DIR / f"{service}.sqlite3")
    parts = urlsplit(base)
    prefix = parts.path.lstrip("/") or "paysys"
    url = urlunsplit(parts._replace(path=f"/{prefix}_{service}"))
    return _configure(
        dj_database_url.parse(url, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
    )


def _configure(db: dict) -> dict:
    if db["ENGINE"] == "django.db.backends.mysql":
        options = db.setdefault("OPTIONS", {})
        options.setdefault("charset", "utf8mb4")
        options.setdefault("isolation_level", "read committed")
        options.setdefault("connect_timeout", 5)
        # identifiers (merchant_order_no, trade numbers, voucher sources) compare exactly, as on
        # SQLite: "abc" and "ABC" are two orders, never a replay of each other
        db.setdefault("TEST", {}).setdefault("CHARSET", "utf8mb4")
        db["TEST"].setdefault("COLLATION", "utf8mb4_bin")
    return db


DATABASES = {alias: _service_database(service) for alias, service in SERVICE_ALIASES.items()}
DATABASE_ROUTERS = ["paysys.routers.ServiceRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache: API throttling, and pending relay kicks (one pass for many commits) -------------
# Redis in full stack, a file cache shared by processes otherwise

CACHE_URL = os.environ.get("CACHE_URL", "")
_broker_env = os.environ.get("CELERY_BROKER_URL", "")
if not CACHE_URL and _broker_env.startswith("redis"):
    CACHE_URL = _broker_env
if CACHE_URL and not CACHE_URL.startswith("file://"):
    # values as JSON, never pickle: a write to this Redis must not become code run here (paysys/core/cache.py)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {"serializer": "paysys.core.cache.JsonSerializer"},
        }
    }
else:  # CACHE_URL=file:///path/to/folder, or var/cache (a RabbitMQ broker has no cache of its own)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": CACHE_URL.removeprefix("file://") or str(VAR_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = [
    "paysys.formats"
]  # admin shows times to the second (paysys/formats/en/formats.py)

STATIC_URL = "static/"
# the web process serves the admin's and the API docs' static files itself (whitenoise), with DEBUG
# off too, found through the apps' static folders at start-up: no collectstatic step to forget.
# A deployment that prefers collected files sets STATIC_ROOT and runs collectstatic.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True

# --- web process (manage.py serve, paysys/core/serving.py) ----------------------------------------
# WEB_WORKERS processes; in each, an event loop reads every request (a slow client costs no thread)
# and WEB_THREADS threads run Django. A request whose body has not arrived WEB_READ_TIMEOUT seconds
# after its headers is a 408; one that finds no thread free within WEB_QUEUE_SECONDS is a 503 with
# Retry-After. Each thread may hold a connection to every service database it touches: workers x
# threads x 7 must stay under the database's max_connections (MariaDB's default is 151).
WEB_WORKERS = int(os.environ.get("WEB_WORKERS", "2"))
WEB_THREADS = int(os.environ.get("WEB_THREADS", "4"))
WEB_QUEUE_SECONDS = float(os.environ.get("WEB_QUEUE_SECONDS", "2"))
WEB_READ_TIMEOUT = float(os.environ.get("WEB_READ_TIMEOUT", "10"))
WEB_KEEPALIVE_SECONDS = int(os.environ.get("WEB_KEEPALIVE_SECONDS", "5"))
WEB_GRACEFUL_SECONDS = int(os.environ.get("WEB_GRACEFUL_SECONDS", "10"))
WEB_ACCESS_LOG = env_bool("WEB_ACCESS_LOG", False)
# a connection delivers each request head within this many seconds (of connecting, or of its
# previous response), else it is closed; at most this many connections per process, and per
# client address (more: closed at once)
# /healthz asks every database at most once per this many seconds per web process (anyone may call it)
HEALTHZ_CACHE_SECONDS = float(os.environ.get("HEALTHZ_CACHE_SECONDS", "2"))
# every worker (and beat) records a heartbeat this often (paysys/core/heartbeats.py); one whose last
# is WORKER_DEAD_AFTER_BEATS beats old is reported dead by /healthz and the admin overview
WORKER_HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "10"))
WORKER_DEAD_AFTER_BEATS = 3
WEB_HEAD_TIMEOUT = float(os.environ.get("WEB_HEAD_TIMEOUT", "10"))
WEB_MAX_CONNECTIONS = int(os.environ.get("WEB_MAX_CONNECTIONS", "4000"))
WEB_MAX_CONNECTIONS_PER_ADDRESS = int(os.environ.get("WEB_MAX_CONNECTIONS_PER_ADDRESS", "256"))
# the request line and headers together, at most (larger: refused before they are read whole)
WEB_MAX_HEAD_BYTES = int(os.environ.get("WEB_MAX_HEAD_BYTES", str(16 * 1024)))

# Refuse oversized request bodies before they are parsed (a notify or an order is < 4 KB).
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

# --- security: HTTPS from the environment, safe defaults whenever DEBUG is off ----------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# only behind a proxy that sets it (and strips it from clients): "HTTP_X_FORWARDED_PROTO,https".
# Trusting the header without such a proxy lets any client claim HTTPS, so it is off unless set.
_proxy_ssl_header = env_list("SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER is 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https"
    )
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# preloading asks browsers' lists to never accept plain HTTP for the domain, hard to undo: opt in
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", PUBLIC_BASE_URL if DEBUG else "")
# Content-Security-Policy of every response (paysys.api.middleware.ContentSecurityPolicyMiddleware):
# everything from this origin only; Swagger UI's assets are served locally (drf-spectacular-sidecar)
CONTENT_SECURITY_POLICY = os.environ.get(
    "CONTENT_SECURITY_POLICY",
    # scripts only from files of this origin; inline styles allowed (the admin's and Swagger UI's
    # style attributes), which cannot run code
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'",
)
# client addresses: REMOTE_ADDR, unless this many trusted proxies append X-Forwarded-For
NUM_PROXIES = int(os.environ.get("NUM_PROXIES", "0"))
# requests per client address on the public endpoints (paysys.api.middleware.PublicRateLimitMiddleware)
PUBLIC_RATE_LIMITS = {
    "gateway": os.environ.get(
        "GATEWAY_RATE_LIMIT", "60000/min"
    ),  # per bank address: at least the payment rate
    "sandbox": os.environ.get(
        "SANDBOX_RATE_LIMIT", "12000/min"
    ),  # the platform polls its query API
    "admin_login": os.environ.get("ADMIN_LOGIN_RATE_LIMIT", "20/min"),
}
# /metrics answers only "Authorization: Bearer <METRICS_TOKEN>" (Prometheus' bearer_token); off unset
METRICS_TOKEN = env_secret("METRICS_TOKEN", required=False)

# --- API ----------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["paysys.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["paysys.api.authentication.IsMerchant"],
    "DEFAULT_THROTTLE_CLASSES": ["paysys.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["paysys.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "paysys.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "paysys.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": NUM_PROXIES,
}
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "1200/min")  # per API key
ORDER_CURRENCIES = env_list("ORDER_CURRENCIES", "CNY")
ORDER_EXPIRY_SECONDS = int(os.environ.get("ORDER_EXPIRY_SECONDS", str(30 * 60)))
# open (CREATED, unexpired) orders a merchant may have; beyond it creating one is a 429
ORDER_MAX_OPEN_PER_MERCHANT = int(os.environ.get("ORDER_MAX_OPEN_PER_MERCHANT", "1000"))
# order polling: a notify may be lost, so orders asks the bank itself; seconds between asks
# while no notify came, then every ORDER_POLL_LATE_INTERVAL until the order expires
ORDER_POLL_SCHEDULE = [int(x) for x in env_list("ORDER_POLL_SCHEDULE", "2,3,5,10,20,30")]
ORDER_POLL_LATE_INTERVAL = int(os.environ.get("ORDER_POLL_LATE_INTERVAL", "180"))
# questions one polling pass asks the bank at a time (threads doing HTTP only)
ORDER_POLL_CONCURRENCY = int(os.environ.get("ORDER_POLL_CONCURRENCY", "8"))
# the most questions orders asks the bank in any one second, polling and expiry passes of every
# worker process together (paysys.core.ratelimit, counted in the shared cache): however many
# orders are due, the bank is never flooded; those not asked yet stay due, longest-due first
ORDER_POLL_MAX_PER_SECOND = int(os.environ.get("ORDER_POLL_MAX_PER_SECOND", "50"))
# an expired order is closed once the bank says it was not paid; if the bank cannot be asked,
# it is closed anyway this long after expiry (a payment arriving later is flagged for a human)
ORDER_CLOSE_GRACE_SECONDS = int(os.environ.get("ORDER_CLOSE_GRACE_SECONDS", "600"))

SPECTACULAR_SETTINGS = {
    "TITLE": "paysys API",
    "DESCRIPTION": "Payment orders for merchants. Authenticate with `Authorization: Bearer <api_key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    # a feature that is off is not in the schema (the message API without its token)
    "PREPROCESSING_HOOKS": ["paysys.messaging.api.hide_when_disabled"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "paysys.api.schema.strict_request_bodies",
    ],
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # "status" is a field of orders and of notifications, with different choices
    "ENUM_NAME_OVERRIDES": {"NotificationStatusEnum": "notifications.models.Notification.Status"},
}

# --- the bank: the platform's side (gateway, pay links, polling) --------------------------

# the platform trusts notifies and query answers signed with this; the sandbox never reads it
BANK_SHARED_SECRET = env_secret(
    "BANK_SHARED_SECRET", dev_default="dev-bank-shared-secret-embedded-default-only"
)
# where payers pay and where polling asks: the bank's addresses, the simulator's only with the sandbox
_bank_url_default = f"{PUBLIC_BASE_URL}/sandbox/bank/" if SANDBOX_ENABLED else ""
BANK_PAY_URL = os.environ.get("BANK_PAY_URL", _bank_url_default and _bank_url_default + "pay/")
BANK_QUERY_URL = os.environ.get(
    "BANK_QUERY_URL", _bank_url_default and _bank_url_default + "payments/"
)
if not BANK_PAY_URL or not BANK_QUERY_URL:
    raise ImproperlyConfigured(
        "the sandbox is off, so the bank is a real one: set BANK_PAY_URL (payers are sent to BANK_PAY_URL<token>) "
        "and BANK_QUERY_URL (order polling asks BANK_QUERY_URL<out_trade_no>)"
    )

# --- the sandbox's own settings (the bank simulator is another party: its own secret, token) ----

if SANDBOX_ENABLED:
    # With DEBUG on the simulator is the dev stack's bank, so it signs with what the platform trusts.
    # With DEBUG off (SANDBOX_ALLOW_IN_PRODUCTION) both must be set explicitly: a staging platform
    # whose bank is the simulator, never a production secret copied over by default.
    SANDBOX_BANK_SECRET = (
        env_secret("SANDBOX_BANK_SECRET", required=not DEBUG) or BANK_SHARED_SECRET
    )
    # the sandbox's control endpoints (release held notifies, pay with test options)
    SANDBOX_TOKEN = (
        env_secret("SANDBOX_TOKEN", required=not DEBUG)
        or hmac.new(
            SANDBOX_BANK_SECRET.encode(), b"paysys.sandbox.control-token", hashlib.sha256
        ).hexdigest()
    )
# where the simulated bank sends its notifies
BANK_NOTIFY_URL = os.environ.get("BANK_NOTIFY_URL", f"{PUBLIC_BASE_URL}/gateway/bank/notify")
# where the simulated bank asks, before taking a payment, whether the order is still payable
# (paysys.bank.ask_order_payable); empty: it does not ask
BANK_ORDER_STATUS_URL = os.environ.get(
    "BANK_ORDER_STATUS_URL", f"{PUBLIC_BASE_URL}/gateway/bank/orders/"
)
# the bank's own resend schedule for unacknowledged notifies (seconds after the payment)
BANK_NOTIFY_SCHEDULE = [0, 2, 5, 15, 30, 60, 120, 300, 600, 1800]

# --- outbound requests (paysys/core/netguard.py) ------------------------------------------

# private networks the platform may send to (merchant notify and check-back URLs); anything
# loopback, private, link-local, multicast or reserved is refused unless listed here. With DEBUG
# on (local development) loopback is allowed so a merchant server on the same machine works.
NOTIFY_ALLOWED_NETWORKS = env_list(
    "NOTIFY_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128" if DEBUG else ""
)

# --- reliable messages (paysys/messaging) --------------------------------------------------

# when each send happens: the 1st at once (0), the next ones 60, 120, 300 and 900 s after the
# previous send; a message still not consumed 900 s after its 5th send goes DEAD (admin resends)
MESSAGE_RESEND_SCHEDULE = [int(x) for x in env_list("MESSAGE_RESEND_SCHEDULE", "0,60,120,300,900")]
MESSAGE_CHECK_BACK_DELAY = int(
    os.environ.get("MESSAGE_CHECK_BACK_DELAY", "60")
)  # a PREPARED message this old is checked
MESSAGE_CHECK_BACK_INTERVAL = int(os.environ.get("MESSAGE_CHECK_BACK_INTERVAL", "60"))
MESSAGE_CHECK_BACK_MAX = int(
    os.environ.get("MESSAGE_CHECK_BACK_MAX", "15")
)  # undecided this often -> DEAD
MESSAGE_CHECK_BACK_BUDGET = 20  # seconds one check-back pass may spend asking producers
# one deadline for a whole check-back over HTTP (resolve, connect, send, answer): a producer
# answering a byte at a time is undecided after this, and asked again next interval
MESSAGE_CHECK_BACK_TIMEOUT = float(os.environ.get("MESSAGE_CHECK_BACK_TIMEOUT", "5"))
MESSAGE_BROKER_RETRY_SECONDS = 5  # a message the broker refused is tried again this soon
MESSAGE_KICK_TTL = 5  # seconds a pending relay kick suppresses further kicks
# after a commit, the producing process runs the relay pass itself, on its kicker thread (off:
# it sends a relay task to its service's worker, one more hop). Either way a pass is paced.
MESSAGE_RELAY_INLINE = env_bool("MESSAGE_RELAY_INLINE", True)
# a paced relay pass ships one batch per queue while none is in flight (paysys/messaging/relay.py);
# a worker that dies mid-batch holds its queue at most this long
MESSAGE_BATCH_IN_FLIGHT_TTL = int(os.environ.get("MESSAGE_BATCH_IN_FLIGHT_TTL", "30"))
# the two-phase HTTP API (/api/v1/messages) is off until a token is set, and open only to the
# topics listed: an outside producer must never be able to announce e.g. a bank payment
MESSAGING_SERVICE_TOKEN = env_secret("MESSAGING_SERVICE_TOKEN", required=False)
MESSAGING_HTTP_TOPICS = env_list("MESSAGING_HTTP_TOPICS", "")

# --- merchant notifications (notifications/) ----------------------------------------------

# waits in seconds after attempt 1, 2, ... (the first attempt is immediate): 15 s, 1 min, 5 min,
# 30 min, 2 h, 6 h, 12 h, 24 h -> 9 attempts over ~45 h; then FAILED, waiting for a human.
# A merchant may have its own (notifications.MerchantSchedule).
NOTIFY_RETRY_SCHEDULE = [
    int(x) for x in env_list("NOTIFY_RETRY_SCHEDULE", "15,60,300,1800,7200,21600,43200,86400")
]
NOTIFY_RETRY_JITTER = float(os.environ.get("NOTIFY_RETRY_JITTER", "0.2"))  # +-20 % on every wait
NOTIFY_CONNECT_TIMEOUT = float(os.environ.get("NOTIFY_CONNECT_TIMEOUT", "5"))
NOTIFY_TOTAL_TIMEOUT = float(
    os.environ.get("NOTIFY_TOTAL_TIMEOUT", "15")
)  # whole attempt, connect included
# requests in flight at once per delivery worker process, and per endpoint host (host:port: the
# URLs of one server share it) within it
NOTIFY_MAX_IN_FLIGHT = int(os.environ.get("NOTIFY_MAX_IN_FLIGHT", "256"))
NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT = int(os.environ.get("NOTIFY_MAX_IN_FLIGHT_PER_ENDPOINT", "8"))
# a claimed record is due again this long after its claim unless its attempt is recorded first:
# a worker killed mid-delivery loses nothing (must exceed NOTIFY_TOTAL_TIMEOUT)
NOTIFY_CLAIM_LEASE = float(os.environ.get("NOTIFY_CLAIM_LEASE", "60"))
NOTIFY_PASS_SECONDS = float(
    os.environ.get("NOTIFY_PASS_SECONDS", "20")
)  # a pass stops claiming after this
NOTIFY_POLL_INTERVAL = 0.1  # seconds between due scans while a pass has requests in flight
NOTIFY_LINGER_SECONDS = 2.0  # a pass with nothing in flight waits for records due this soon
NOTIFY_COLLECT_SECONDS = (
    0.03  # after an attempt finishes, wait this long for more before the next turn
)
NOTIFY_KICK_TTL = 1  # seconds a pending delivery kick suppresses further kicks
# after a webhook secret rotation the old secret keeps signing (next to the new one) this long
NOTIFY_SECRET_GRACE = int(os.environ.get("NOTIFY_SECRET_GRACE", str(24 * 3600)))
# --- TCC (paysys/tcc) ----------------------------------------------------------------------

TCC_TRY_TIMEOUT = float(os.environ.get("TCC_TRY_TIMEOUT", "2"))  # seconds one try may take
TCC_DECISION_GRACE = 5  # seconds past the tries' timeouts before recovery cancels a TRYING one
TCC_TRY_THREADS = 8  # per process and participant alias: its try threads, each with one connection
# waits before recovery resends an unfinished phase two: after the decision, after the 1st
# resend, ...; due again after the last -> flagged for a human (about an hour by default)
TCC_RETRY_SCHEDULE = [
    int(x) for x in env_list("TCC_RETRY_SCHEDULE", "10,20,30,60,120,300,600,900,1800")
]
TCC_PHASE_TWO_BATCH = 200  # branch ops per phase-two task
# confirms run at once in the process that decided, on its try threads (off: only the
# participants' workers run them, after a kick)
TCC_PHASE_TWO_INLINE = env_bool("TCC_PHASE_TWO_INLINE", True)
TCC_KICK_TTL = 5  # seconds a pending phase-two kick suppresses further kicks of its queue
TCC_BARRIER_RETENTION_DAYS = int(
    os.environ.get("TCC_BARRIER_RETENTION_DAYS", "7")
)  # then final ones' rows go

# --- retention (paysys/core/retention.py, manage.py purge_history) -------------------------

# consumed messages (outbox rows CONSUMED this long ago, with their inbox rows), notification
# attempts and processed bank-notify receipts older than this are deleted; at least 1 day
RETENTION_DAYS = int(os.environ.get("RETENTION_DAYS", "30"))
RETENTION_BATCH_SIZE = int(
    os.environ.get("RETENTION_BATCH_SIZE", "1000")
)  # keys per range: rows per DELETE at most
# pause after each DELETE: as long as the batch took, and at least this (retention takes at most
# half of one connection's time, so payments keep the database)
RETENTION_PAUSE_SECONDS = float(os.environ.get("RETENTION_PAUSE_SECONDS", "0.05"))
RETENTION_PASS_SECONDS = (
    45  # one beat pass stops after this (under the task time limit); the next goes on
)

# --- Celery: one queue per service; settings that never lose a task -----------------------

# one queue and worker per service (paysys/topology.py), "polling" orders' own bank-asking one
SERVICE_QUEUES = [
    worker.queue for worker in topology.workers(sandbox=SANDBOX_ENABLED) if worker.service
]
CELERY_BROKER_URL = _broker_env or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's filesystem transport with atomic publishes (paysys/core/broker.py: kombu's own can
    # hand a worker a half-written file, which kills it, and lose the message)
    CELERY_BROKER_TRANSPORT = "paysys.core.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "staging_folder": str(_broker_dir / "staging"),  # messages are written here, then renamed
        "claimed_folder": str(_broker_dir / "claimed"),
        "failed_folder": str(_broker_dir / "failed"),  # undecodable files, set aside
        "store_processed": False,
        "polling_interval": 0.05,
    }
    # prefork workers poll a non-async transport about once per second per task; the solo pool
    # consumes back to back (it cannot enforce time limits: an embedded-mode trade-off)
    CELERY_WORKER_POOL = "solo"
else:
    # longer than any countdown paysys uses (CELERY_MAX_COUNTDOWN), so no early redelivery
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_MAX_COUNTDOWN = 600
# queues of their own, off the payment path (paysys/topology.py)
NOTIFY_DELIVERY_QUEUE = "notify_delivery"
MESSAGE_CHECK_BACK_QUEUE = "check_back"
MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_QUEUES = [
    Queue(worker.queue, routing_key=worker.queue)
    for worker in topology.workers(sandbox=SANDBOX_ENABLED)
]
CELERY_TASK_DEFAULT_QUEUE = "core"
CELERY_TASK_ROUTES = topology.task_routes(sandbox=SANDBOX_ENABLED)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "paysys.core.schedules:Scheduler"
# Beat schedules live here, in code; paysys.core.schedules syncs them into django-celery-beat
# after every migrate and when beat starts (entries removed here are removed there too).
CELERY_BEAT_SCHEDULE = {
    "orders.close_expired_orders": {"task": "orders.close_expired_orders", "schedule": 30.0},
    "messaging.recover_messages": {"task": "messaging.recover_messages", "schedule": 5.0},
    "messaging.check_back": {"task": "messaging.check_back", "schedule": 5.0},
    "orders.poll_bank": {"task": "orders.poll_bank", "schedule": 1.0},
    "orders.poll_bank_refunds": {"task": "orders.poll_bank_refunds", "schedule": 5.0},
    "notifications.deliver_due": {"task": "notifications.deliver_due", "schedule": 1.0},
    "tcc.recover_tcc": {"task": "tcc.recover_tcc", "schedule": 2.0},
    "tcc.purge_barriers": {"task": "tcc.purge_barriers", "schedule": 3600.0},
    "paysys.purge_history": {"task": "paysys.purge_history", "schedule": 60.0},
    "paysys.reconcile": {
        "task": "paysys.reconcile",
        "schedule": 86400.0,
    },  # daily; reports in admin
}
if SANDBOX_ENABLED:
    CELERY_BEAT_SCHEDULE["sandbox.resend_bank_notifies"] = {
        "task": "sandbox.resend_bank_notifies",
        "schedule": 5.0,
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # routine lines (beat's one-second polls, the bank's "no payment yet" 404s) are DEBUG
    "filters": {"routine_to_debug": {"()": "paysys.core.logfilters.RoutineToDebug"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["routine_to_debug"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # a request with a foreign Host header is answered 400; a traceback per request would let
        # anyone flood the log (and its alerts)
        "django.security.DisallowedHost": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}
